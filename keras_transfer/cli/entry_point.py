"""``keras-transfer`` command line: argument parsing only; every command calls the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
import traceback

from keras_transfer._utils import supervisor
from keras_transfer.cli import commands, serve
from keras_transfer.cli.options import add_group, add_verbose
from keras_transfer.runs import config
from keras_transfer.training.distribute import WORKER_LOST


def _add_backbone_args(p: argparse.ArgumentParser, default_weights: str = "imagenet", include_top: bool = True) -> None:
    """--backbone, --weights (and --include-top) and --input-size, from the config fields."""
    fields = ("backbone", "weights", "include_top") if include_top else ("backbone", "weights")
    add_group(p, config.ModelConfig, only=fields, defaults={"weights": default_weights})
    add_group(p, config.DataConfig, only=("input_size",))


def cmd_inspect(args) -> int:
    from keras_transfer.models import backbones, surgery

    size = args.input_size or backbones.get_backbone(args.backbone).default_size
    base = backbones.build_base(args.backbone, weights=args.weights,
                                include_top=args.include_top, input_shape=(size, size, 3))
    rows = surgery.describe(base)
    print(surgery.format_table(rows, only_cut_points=args.cut_points_only))
    unit_rows = [r for r in rows if r.unit]
    print(f"\n{base.name}: {len(rows)} layers, {sum(r.cut_point for r in rows)} cut points, "
          f"{len(unit_rows)} units ({unit_rows[0].name} … {unit_rows[-1].name}).")
    if args.filters:
        from keras_transfer import plots

        conv = next(layer for layer in base.layers if getattr(layer, "kernel", None) is not None
                    and len(layer.kernel.shape) == 4 and layer.kernel.shape[2] == 3)
        row = backbones.get_backbone(args.backbone)
        plots.filters(conv.get_weights()[0], args.filters, bgr=row.preprocess_mode == "caffe",
                      title=f"{base.name} {conv.name} filters (weights={args.weights})")
        print(f"wrote {args.filters}: the {conv.kernel.shape[-1]} filters of {conv.name}")
    print("  --removed N drops the top N units; --frozen K freezes layers [:K] "
          f"(unit boundaries: {', '.join(str(k) for k in surgery.freeze_points(base))}).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-transfer",
        description="Transfer learning on small image datasets: remove the upper layers of a "
                    "pretrained CNN, freeze the first ones, fine-tune a new head, export.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("inspect", help="list a backbone's layers, marking cut points and units",
                       description="Print index, name, type, output shape, params, cut point, "
                                   "unit and trainable for every layer of a backbone.")
    _add_backbone_args(p, default_weights="none")
    p.add_argument("--cut-points-only", action="store_true", help="list only the cut points")
    p.add_argument("--filters", metavar="PNG", default=None, help="also draw the first conv layer's filters to PNG")
    p.set_defaults(func=cmd_inspect)


    commands.add_commands(sub, _add_backbone_args)

    serve.add_serve_command(sub)
    add_verbose(parser)
    for command in sub.choices.values():
        add_verbose(command)  # (experiment NAME's parsers add their own)
    return parser


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _show_library_log() -> None:
    """The library logs what it does (stages, cache use...); the command line shows it as it happens."""
    package_logger = logging.getLogger("keras_transfer")
    if not any(isinstance(h, _StdoutHandler) for h in package_logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    package_logger.propagate = False  # Keras Tuner and absl give the root logger a handler too: no line twice


# faults that end a command with one line on stderr (exit code 2), not a traceback: bad
# arguments and data (ValueError, FileNotFoundError, FileExistsError) and the machine's own
# (OSError: a full disk, a read-only folder, a failed download)
CLEAR_ERRORS = (ValueError, OSError)


@contextlib.contextmanager
def _native_stderr_hidden(hidden: bool):
    """TensorFlow's C++ start-up lines (CUDA probing, oneDNN, CPU features) are written to file
    descriptor 2 before its logging is set up, whatever TF_CPP_MIN_LOG_LEVEL says: send fd 2 to
    a file while TensorFlow loads and finds its devices, and show it only if that fails."""
    if not hidden:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _start_tensorflow(show_logs: bool) -> None:
    """Import TensorFlow and initialise its devices, quietly unless ``show_logs``."""
    if not show_logs and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "2":  # the package's default
        # TF's native ERROR lines are not the user's errors either: a SavedModel's first call logs
        # grappler's "layout failed" and oneDNN's fallback notes (harmless); real faults still
        # arrive as Python exceptions, which the CLI reports.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _native_stderr_hidden(not show_logs):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe, and its cuInit line, happen here
    # Every trial and stage builds new models, so TF warns about "retracing" each time; in the
    # CLI that is noise, not advice (library users keep TF's logging as they set it).
    tf.get_logger().setLevel("DEBUG" if show_logs else "ERROR")


class _PlainText:
    """A text stream that drops terminal control codes (colours, line erasing, carriage-return
    redraws) on their way to a file or pipe: Keras's progress bar, Keras Tuner's display and
    IPython's clear_output all write them, whatever the output is."""

    CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r(?!\n)")

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(self.CODES.sub("", text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _plain_output_off_a_terminal():
    saved = sys.stdout, sys.stderr
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _PlainText) and not stream.isatty():
            setattr(sys, name, _PlainText(stream))
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if supervisor.needed(args.command):  # a cluster member: run where a stuck wait can be ended
        from keras_transfer.training.distribute import NO_PEER, collective_timeout, peers

        try:
            timeout = collective_timeout()
        except ValueError as err:
            print(f"keras-transfer {args.command}: error: {err}", file=sys.stderr)
            return 2
        return supervisor.supervise(argv, timeout, NO_PEER.format(peers=", ".join(peers()), timeout=timeout))
    with _plain_output_off_a_terminal():
        return _run(args)


def _run(args) -> int:
    _show_library_log()
    verbose = getattr(args, "show_tf_logs", False)
    _start_tensorflow(verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"keras-transfer {args.command}: interrupted" + (
            "; run the same command with --resume to continue" if args.command == "train" else ""), file=sys.stderr)
        return 130
    except Exception as err:
        said = _one_line(err)
        if said is None:
            raise  # not a kind we know: a bug, whose traceback is the report
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (--verbose shows the traceback)" if not isinstance(err, CLEAR_ERRORS) else ""
        print(f"keras-transfer {args.command}: error: {said}{hint}", file=sys.stderr)
        return 3 if _worker_lost(err) else 2


def _one_line(err: Exception) -> str | None:
    """What to print for an error of a kind we know, else None. Ours (ValueError) and the
    system's (OSError: disk full, read-only, permissions, missing files) say what is wrong;
    TensorFlow's say it in their first line; running out of memory says what to lower."""
    lost = _worker_lost(err)
    if lost is not None:
        return lost
    if isinstance(err, CLEAR_ERRORS):
        return str(err)
    if isinstance(err, MemoryError):
        return "out of memory; lower --batch-size, --input-size or --limit-per-class"
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        if isinstance(err, tf.errors.ResourceExhaustedError):
            return f"out of memory ({_first_line(err)}); lower --batch-size or --input-size"
        if isinstance(err, tf.errors.OpError):
            return f"TensorFlow: {type(err).__name__}: {_first_line(err)}"
    return None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:300]


def _worker_lost(err: Exception):
    """The clear message for a multi-worker run whose peer died, else None."""
    if "tensorflow" not in sys.modules:
        return None
    import tensorflow as tf


    if isinstance(err, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
                        tf.errors.AbortedError)) and os.environ.get("TF_CONFIG"):
        return WORKER_LOST.format(error=_first_line(err)[:200])
    return None


if __name__ == "__main__":
    sys.exit(main())
