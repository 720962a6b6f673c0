"""The commands beyond ``inspect``: each maps arguments to a library call, nothing more."""

from __future__ import annotations

import datetime
import os
import sys

import numpy as np

from keras_transfer import cli_experiments, config
from keras_transfer.cli_options import add_group, group_from_args


def cmd_probe(args) -> int:
    from keras_transfer import probe
    from keras_transfer.backbones import build_base

    data = group_from_args(config.DataConfig, args)
    size = data.size(args.backbone)
    splits = data.load(args.backbone)
    images = np.concatenate([splits.train.images, splits.val.images])  # never the test images
    labels = np.concatenate([splits.train.labels, splits.val.labels])
    base = build_base(args.backbone, weights=args.weights, input_shape=(size, size, 3))
    out = args.out or os.path.join("runs", f"probe-{args.backbone}-{data.name}")
    result = probe.probe_cuts(base, images, labels, splits.class_names, out, args.sample, args.seed, args.batch_size)
    print(probe.format_rows(result))
    print(f"\nrecommended: --removed {result['recommended_removed']} (ends at {result['recommended_layer']}); "
          f"wrote {out}/probe.json and {out}/probe.png")
    return 0


# options a command uses itself rather than passing on in its config
RUN_OPTIONS = {"train": ("out", "resume"), "tune": ("out",), "experiment": ("out",)}


def train_config(args) -> config.TrainConfig:
    """``train``'s options as a TrainConfig (every option but RUN_OPTIONS)."""
    return config.TrainConfig(*(group_from_args(g, args) for g in
                                (config.DataConfig, config.ModelConfig, config.RecipeConfig, config.DistributeConfig)))


def cmd_train(args) -> int:
    from keras_transfer import runs

    config = train_config(args)
    out = args.out or os.path.join("runs", f"{config.model.backbone}-{config.data.name}"
                                           f"-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    try:
        metrics = runs.train(config, out, resume=args.resume)
    except FileExistsError as err:  # the library names its parameters; say which flags they are
        raise FileExistsError(f"{err} (run_dir is --out; pass --resume to continue the run)") from None
    if "export" in metrics:
        print(f"\ntest accuracy {metrics['accuracy']:.3f} on {metrics['images']} images "
              f"(majority class {metrics['majority_class_rate']:.3f}); {metrics['seconds']:.0f} s")
        print(f"run folder: {out}\nexported:   {metrics['export']}")
    return 0


_TUNE_RECIPE = ("recipe", "epochs", "fine_tune_epochs", "batch_size", "cache_features")


def _tune_recipe_defaults() -> dict:
    default = config.SearchConfig().recipe
    return {name: getattr(default, name) for name in ("epochs", "fine_tune_epochs", "patience")}


def search_config(args) -> config.SearchConfig:
    """``tune``'s options as a SearchConfig (every option but RUN_OPTIONS)."""
    return config.SearchConfig(group_from_args(config.DataConfig, args), group_from_args(config.ModelConfig, args),
                               group_from_args(config.RecipeConfig, args, _tune_recipe_defaults()),
                               group_from_args(config.DistributeConfig, args),
                               group_from_args(config.SearchSpaceConfig, args))


def cmd_tune(args) -> int:
    from keras_transfer import tuning

    config = search_config(args)
    out = args.out or os.path.join("runs", f"search-{config.model.backbone}-{config.data.name}")
    tuning.search(config, out)
    return 0


def cmd_export(args) -> int:
    from keras_transfer import runs

    print(f"exported: {runs.export_run(args.run_dir)}")
    return 0


def cmd_predict(args) -> int:
    from keras_transfer import export

    results, skipped = export.load(args.model_dir).predict_files(args.images)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for r in results:
        print(f"{r['path']}\t{r['class']}\t{r['probability']:.4f}")
    return 0 if len(results) == len(args.images) else 1


def cmd_sample_data(args) -> int:
    from keras_transfer import data

    data.sample_guitars(args.out_dir, args.n_per_class, args.seed, args.size)
    print(f"wrote {3 * args.n_per_class} synthetic guitar images to {args.out_dir}/{{les_paul,sg,stratocaster}}")
    return 0


def add_commands(sub, add_backbone_args) -> None:
    """Register train/export/predict/sample-data on ``sub``."""
    p = sub.add_parser("train", help="fine-tune a pretrained backbone on images and export it",
                       description="Two-stage fine-tuning (head, then the upper layers), evaluation on the test "
                                   "split, plots, and a SavedModel export to RUN_DIR/export.")
    for group in (config.DataConfig, config.ModelConfig, config.RecipeConfig, config.DistributeConfig):
        add_group(p, group, required_source=True)
    p.add_argument("--out", metavar="RUN_DIR", default=None, help="run folder (default: runs/<backbone>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="Keras Tuner search over removed x frozen layers (resumable, distributable)",
                       description="Search how many units to remove and to freeze (plus head width, dropout, "
                                   "learning rate). Re-running the same command resumes; KERASTUNER_TUNER_ID/"
                                   "ORACLE_IP/ORACLE_PORT make it a distributed chief or worker. Writes "
                                   "results.csv, heatmap.png, best.json and exports the retrained best model.")
    add_group(p, config.DataConfig, required_source=True)
    add_group(p, config.ModelConfig, only=("backbone", "weights"))  # the rest of the model is searched
    add_group(p, config.RecipeConfig, only=_TUNE_RECIPE, defaults=_tune_recipe_defaults())
    add_group(p, config.SearchSpaceConfig)
    add_group(p, config.DistributeConfig)
    p.add_argument("--out", metavar="SEARCH_DIR", default=None, help="search folder (default: runs/search-<backbone>-<data>)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("probe", help="score every cut of a backbone on your data (LogME, linear probe) before training",
                       description="One forward pass computes pooled features at every cut (0..n-1 units removed); "
                                   "each is scored by LogME and a 5-fold linear probe. Prints a table, writes "
                                   "probe.json and probe.png, and recommends --removed.")
    add_group(p, config.DataConfig, required_source=True)
    add_group(p, config.ModelConfig, only=("backbone", "weights"))
    p.add_argument("--sample", type=int, default=1000, help="probe at most this many images (stratified; default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", metavar="DIR", default=None, help="where probe.json/png go (default: runs/probe-<backbone>-<data>)")
    p.set_defaults(func=cmd_probe)

    cli_experiments.add_parser(sub, add_backbone_args)

    p = sub.add_parser("export", help="export a finished run as a new SavedModel version")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="classify image files with an exported model")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="an export folder (RUN_DIR/export) or one version of it")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("sample-data", help="write a small synthetic dataset (guitars)")
    p.add_argument("name", choices=["guitars"])
    p.add_argument("out_dir", metavar="DIR")
    p.add_argument("--n-per-class", type=int, default=40)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample_data)
