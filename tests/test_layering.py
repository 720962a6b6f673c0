"""The import layering of docs/design.md, as `lint-imports` checks it from setup.cfg: kept by the
package, and broken by an import that goes the wrong way."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _lint(folder: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": folder, "COLUMNS": "300"}  # one line per contract
    return subprocess.run([LINT, os.path.join(folder, "setup.cfg"), "--no-cache"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy(tmp_path) -> str:
    folder = str(tmp_path / "repo")
    shutil.copytree(os.path.join(ROOT, "keras_transfer"), os.path.join(folder, "keras_transfer"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "setup.cfg"), folder)
    return folder


def _add_line(path: str, line: str) -> None:
    with open(path) as f:
        text = f.read()
    head, _, rest = text.partition("\nimport ")  # after the module docstring and __future__
    with open(path, "w") as f:
        f.write(f"{head}\n{line}\nimport {rest}")


@pytest.fixture(scope="module")
def lint_available():
    if not os.path.exists(LINT):
        pytest.fail(f"{LINT} is missing: install the dev extras (pip install -e '.[dev]')")


def test_the_package_keeps_its_layers(lint_available):
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module, line, contract", [
    # data is below training: data importing training goes up
    ("data/images.py", "from keras_transfer.training import recipes  # noqa", "Imports go one way"),
    # the bottom floor imports nothing of the package
    ("_utils/atomic_files.py", "from keras_transfer import plots  # noqa", "Imports go one way"),
    # export imports training, so training importing export makes a cycle as well as going up
    ("training/evaluation.py", "import keras_transfer.export.saved_model  # noqa", "Imports go one way"),
    # serving and tuning share a layer: neither imports the other
    ("serving/rest.py", "from keras_transfer.tuning import results  # noqa", "Imports go one way"),
    # a private module of another package
    ("export/predictor.py", "from keras_transfer.training import _disk_cache  # noqa", "private module"),
    # two modules of one package importing each other
    ("data/in_memory.py", "from keras_transfer.data import loading  # noqa", "No import cycle"),
])
def test_a_reversed_import_breaks_the_check(tmp_path, lint_available, module, line, contract):
    folder = _copy(tmp_path)
    _add_line(os.path.join(folder, "keras_transfer", module), line)
    result = _lint(folder)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    broken = [text for text in out.split("\n") if text.endswith("BROKEN")]
    assert any(contract in text for text in broken), out
    assert os.path.basename(module)[:-3] in out  # the offending module is named
