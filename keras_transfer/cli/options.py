"""Command-line options built from the config groups' fields (:mod:`keras_transfer.runs.config`):
each field's flag, help, default and argparse settings are declared once, beside the field."""

from __future__ import annotations

import argparse
import dataclasses

from keras_transfer.runs.config import RECIPES_OWN


def add_group(parser: argparse.ArgumentParser, group_cls, only=None, defaults: dict | None = None,
              required_source: bool = False) -> None:
    """One option per flagged field of ``group_cls`` (those named in ``only``, if given);
    ``defaults`` overrides a field's default for this command."""
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in dataclasses.fields(group_cls):
        flag = f.metadata.get("flag")
        if not flag or (only is not None and f.name not in only):
            continue
        kwargs = dict(f.metadata["argparse"])
        target = parser
        if "group" in kwargs:
            name = kwargs.pop("group")
            if name not in exclusive:
                exclusive[name] = parser.add_mutually_exclusive_group(required=required_source)
            target = exclusive[name]
        flags = flag if isinstance(flag, tuple) else (flag,)  # the first is the name; others are aliases
        default = (defaults or {}).get(f.name, f.default)
        if default == RECIPES_OWN:  # not given: left out of the namespace, the field keeps it (argparse
            default = argparse.SUPPRESS  # would parse a string default with the option's type)
        if kwargs.get("action") in ("store_true", "store_false", "store_const"):
            target.add_argument(*flags, dest=f.name, default=default, help=f.metadata["help"], **kwargs)
            continue
        shown = f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})" \
            if default not in (None, argparse.SUPPRESS) and "default:" not in f.metadata["help"] else ""
        target.add_argument(*flags, dest=f.name, default=list(default) if isinstance(default, tuple) else default,
                            help=f.metadata["help"] + shown, **kwargs)


def group_from_args(group_cls, args: argparse.Namespace, defaults: dict | None = None):
    """``group_cls`` from the parsed options it declared; fields without an option keep their default."""
    values = dict(defaults or {})
    for f in dataclasses.fields(group_cls):
        if hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return group_cls(**values)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` (on the main parser and every command): TensorFlow's own log lines too."""
    parser.add_argument("--verbose", dest="show_tf_logs", action="store_true", default=argparse.SUPPRESS,
                        help="also show TensorFlow's own start-up and C++ log lines (hidden by default) and "
                             "the traceback of an error")
