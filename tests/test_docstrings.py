"""The public API as a reader meets it: ``kt.__all__`` names exactly what is offered, and every
public name's docstring carries an example that runs and prints what it says."""

import doctest
import inspect
import types

import pytest

import keras_transfer as kt

NAMES = [name for name in kt.__all__ if not isinstance(getattr(kt, name), types.ModuleType)]
# modules whose own docstrings show a walk through them
MODULES = ["keras_transfer", "keras_transfer.plots", "keras_transfer.training.lr_finder"]


@pytest.fixture(autouse=True)
def _quiet_package_logger():
    """An example shows what it returns; the log lines a command-line test's handler would print
    on stdout are not part of it."""
    import logging

    logger = logging.getLogger("keras_transfer")
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [], True
    yield
    logger.handlers, logger.propagate = handlers, propagate


def _run(tests) -> doctest.DocTestRunner:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    return runner


def test_all_lists_exactly_the_public_api():
    assert sorted(kt.__all__) == sorted(set(kt.__all__))
    assert not [name for name in kt.__all__ if name.startswith("_")]
    assert sorted(dir(kt)) == sorted(kt.__all__)  # what tab completion offers: no private module, nothing else
    for name in kt.__all__:
        getattr(kt, name)  # every name resolves
    assert {"Learner", "load_data", "load_learner", "search", "SearchResult", "Predictor", "recipe", "Recipe",
            "sample_guitars", "build_base", "chop", "freeze", "units"} <= set(kt.__all__)


@pytest.mark.parametrize("name", NAMES)
def test_every_public_name_has_an_example_that_runs(name):
    obj = getattr(kt, name)
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"kt.{name} has no example in its docstring"
    assert "+SKIP" not in doc
    module = inspect.getmodule(obj)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, module=module, globs={**vars(module), "kt": kt})
    runner = _run(tests)
    assert runner.tries > 0 and runner.failures == 0


@pytest.mark.parametrize("module_name", MODULES)
def test_module_walkthroughs_run(module_name):
    import importlib

    module = importlib.import_module(module_name)
    tests = doctest.DocTestFinder(recurse=False).find(module, module_name, globs={**vars(module), "kt": kt})
    runner = _run(tests)
    assert runner.tries > 0 and runner.failures == 0


def test_the_learners_public_methods_say_what_they_do():
    for cls in (kt.Learner, kt.SearchResult, kt.Predictor):
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_") and callable(member):
                assert inspect.getdoc(member), f"{cls.__name__}.{name} has no docstring"
