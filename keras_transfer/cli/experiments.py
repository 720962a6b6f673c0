"""``keras-transfer experiment NAME``: one sub-command per seed paper, options -> its config."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os

from keras_transfer.cli.options import add_verbose
from keras_transfer.training.precision import PRECISIONS

# name -> (module under keras_transfer.experiments, config class, figure, one-line description)
EXPERIMENTS = {
    "layer-removal": ("layer_removal", "LayerRemovalConfig", "layer_removal.png",
                      "Zhi et al. 2017: test accuracy against units removed, frozen and fine-tuned, over seeded "
                      "60/20/20 splits, with the probe's scores and Kendall's tau."),
    "transferability": ("transferability", "TransferabilityConfig", "transferability.png",
                        "Yosinski et al. 2014: classes split into A and B (random halves, and a named split); "
                        "BnB, BnB+, AnB, AnB+ for n = 1..5 units of a small conv net; accuracy on B against n."),
    "keep-classifier": ("keep_classifier", "KeepClassifierConfig", "keep_classifier.png",
                        "Shermin et al. 2019: transfer A -> B with the source classifier kept (log -> LayerNorm -> "
                        "new layers) vs dropped, over frozen depth."),
    "binary-aux": ("binary_aux", "BinaryAuxConfig", "binary_aux.png",
                   "Borthakur & Einhorn: source networks trained on A with and without a binary auxiliary head "
                   "(paired), transferred to B (all images and few per class; frozen vs reduced rate)."),
}


def _names(value: str) -> tuple:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _ints(value: str) -> tuple:
    try:
        return tuple(int(v) for v in _names(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,10. Received: {value!r}")


def _common(p, dataset: str, limit: int, input_size: int | None, seeds: int, epochs: int) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="DIR", help="folder with one sub-folder of images per class")
    source.add_argument("--dataset", metavar="NAME", default=dataset, help="built-in dataset (default: %(default)s)")
    p.add_argument("--limit-per-class", type=int, default=limit, help="images per class (default: %(default)s)")
    if input_size:  # (layer-removal takes it from the backbone options)
        p.add_argument("--input-size", type=int, default=input_size, help="image side in pixels (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=seeds, help="seeds, each a full repeat (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=epochs, help="epochs per training (default: %(default)s)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--in-memory", choices=("auto", "yes", "no"), default="auto",
                   help="hold the images decoded, or stream them from their files (see train; default: %(default)s)")
    p.add_argument("--out", metavar="DIR", default=None, help="default: runs/experiment-<name>-<data>")


def _ab(p, a_classes: bool = True) -> None:
    if a_classes:
        p.add_argument("--a-classes", type=_names, default=None, metavar="C1,C2,...",
                       help="a named split: these classes are A, the rest B (besides random halves; on "
                            "fashion_mnist the default named split is tops vs the rest)")
    p.add_argument("--width", type=int, default=16, help="the small net's first conv width (default: %(default)s)")


def add_experiment_command(sub, add_backbone_args) -> None:
    p = sub.add_parser("experiment", help="rerun a seed paper's experiment on your data (resumable)",
                       description="Each experiment writes results.json after every finished cell (a killed run "
                                   "goes on with the same command) and a PNG, and prints its table.")
    names = p.add_subparsers(dest="name", required=True, metavar="NAME")
    q = names.add_parser("layer-removal", help=EXPERIMENTS["layer-removal"][3], description=EXPERIMENTS["layer-removal"][3])
    _common(q, "elpv", 150, None, 3, 5)
    add_backbone_args(q, default_weights="hed", include_top=False)
    q.set_defaults(input_size=128)
    q.add_argument("--removed-max", type=int, default=6, help="remove 0..N units (default: %(default)s)")
    q.add_argument("--fine-tune-epochs", type=int, default=5, help="fine-tuning epochs per cell (default: %(default)s)")
    q.add_argument("--batch-size", type=int, default=32)
    q = names.add_parser("transferability", help=EXPERIMENTS["transferability"][3], description=EXPERIMENTS["transferability"][3])
    _common(q, "fashion_mnist", 500, 28, 3, 8)
    _ab(q)
    q = names.add_parser("keep-classifier", help=EXPERIMENTS["keep-classifier"][3], description=EXPERIMENTS["keep-classifier"][3])
    _common(q, "fashion_mnist", 500, None, 3, 8)
    q.add_argument("--input-size", type=int, default=None, help="image side (default: 28; with --backbone its ImageNet size)")
    _ab(q)
    q.add_argument("--frozen-max", type=int, default=5, help="freeze 0..N units (default: %(default)s)")
    q.add_argument("--head-width", type=int, default=64, help="units of the layer on the kept classifier (default: %(default)s)")
    q.add_argument("--backbone", default=None, help="a pretrained source with its ImageNet classifier (e.g. vgg16) "
                                                    "instead of the small net trained on A; targets all classes")
    q.add_argument("--weights", default="imagenet", type=lambda v: None if v.lower() == "none" else v,
                   help="the --backbone's weights: imagenet, a file, or none (default: %(default)s)")
    q = names.add_parser("binary-aux", help=EXPERIMENTS["binary-aux"][3], description=EXPERIMENTS["binary-aux"][3])
    _common(q, "fashion_mnist", 500, 28, 5, 8)
    _ab(q, a_classes=False)
    q.add_argument("--b-per-class", type=_ints, default=(0, 10), metavar="N1,N2",
                   help="B's training images per class, 0 for all (default: 0,10)")
    q.add_argument("--binary-weight", type=float, default=0.4, help="B of the combined loss (default: %(default)s)")
    q.add_argument("--lr-factor", type=float, default=0.1,
                   help="rate factor of transferred layers in the reduced_lr mode (default: %(default)s)")
    for q in names.choices.values():
        add_verbose(q)
    p.set_defaults(func=cmd_experiment)


def experiment_config(args):
    """The experiment's config from its options: every option lands in a field."""
    module_name, class_name, _, _ = EXPERIMENTS[args.name]
    cls = getattr(importlib.import_module(f"keras_transfer.experiments.{module_name}"), class_name)
    values = {k: v for k, v in vars(args).items()
              if k not in ("func", "command", "name", "out", "data", "dataset", "show_tf_logs")}
    values.update(data_dir=args.data, dataset=None if args.data else args.dataset, seeds=tuple(range(args.seeds)))
    if "removed_max" in values:
        values["removed"] = tuple(range(values.pop("removed_max") + 1))
    if "frozen_max" in values:
        values["frozen"] = tuple(range(values.pop("frozen_max") + 1))
    if "epochs" in values and "head_epochs" in {f.name for f in dataclasses.fields(cls)}:
        values["head_epochs"] = values.pop("epochs")
    return cls(**values)


def cmd_experiment(args) -> int:
    module_name, _, figure, _ = EXPERIMENTS[args.name]
    module = importlib.import_module(f"keras_transfer.experiments.{module_name}")
    config = experiment_config(args)
    data_name = args.dataset if not args.data else os.path.basename(os.path.normpath(args.data))
    out = args.out or os.path.join("runs", f"experiment-{args.name}-{data_name}")
    result = module.run(config, out)
    print(module.format_summary(result))
    print(f"\nwrote {out}/results.json and {out}/{figure}")
    return 0
