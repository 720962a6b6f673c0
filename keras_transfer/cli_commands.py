"""The commands beyond ``inspect``: each maps arguments to a library call, nothing more."""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import numpy as np

from keras_transfer import cli_experiments


def _add_data_args(p: argparse.ArgumentParser) -> None:
    from keras_transfer.data import BUILTIN_DATASETS

    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="DIR", help="folder with one sub-folder of images per class")
    source.add_argument("--dataset", metavar="NAME",
                        help=f"built-in dataset: {', '.join(BUILTIN_DATASETS)}, or tfds:NAME (already downloaded)")
    p.add_argument("--limit-per-class", type=int, default=None, help="use at most N images of each class")
    p.add_argument("--val-split", type=float, default=0.15, help="validation fraction (default: %(default)s)")
    p.add_argument("--test-split", type=float, default=0.15, help="test fraction (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, init and shuffling (default: %(default)s)")


def _add_distribute_args(p: argparse.ArgumentParser) -> None:
    from keras_transfer.distribute import STRATEGIES
    from keras_transfer.precision import PRECISIONS

    p.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="tf.distribute strategy (default: auto: TF_CONFIG -> multi-worker, GPUs -> mirrored)")
    p.add_argument("--devices", default=None, help="devices to mirror over, e.g. /gpu:0,/gpu:1")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="compute precision: auto = float16 on GPUs, bfloat16 on CPUs with bf16 instructions, "
                        "else float32 (softmax and exports stay float32) (default: %(default)s)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from keras_transfer.heads import HEADS
    from keras_transfer.recipes import RECIPE_NAMES

    p.add_argument("--head", default="gap_dense", choices=list(HEADS), help="head on the backbone (default: %(default)s)")
    p.add_argument("--recipe", default="default", choices=RECIPE_NAMES,
                   help="fine-tuning recipe: default, tutorial (seed tutorial: RMSprop head, SGD 1e-4), "
                        "keras_io (keras.io guide) (default: %(default)s)")
    p.add_argument("--width", type=int, default=None, help="hidden units of the head, 0 for none (default: the recipe's)")
    p.add_argument("--dropout", type=float, default=None, help="dropout before the classifier (default: the recipe's)")
    p.add_argument("--binary-weight", type=float, default=0.4, help="B of the binary_auxiliary head's loss")
    p.add_argument("--batch-size", type=int, default=32, help="per-replica batch size (default: %(default)s)")
    p.add_argument("--augment", action="store_true", help="random flip/rotation/zoom while training (disables feature caching)")


def _removed(value: str):
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of units or 'auto', got {value!r}") from None


def cmd_probe(args) -> int:
    from keras_transfer import data, probe
    from keras_transfer.backbones import build_base, get_backbone

    size = args.input_size or get_backbone(args.backbone).default_size
    splits = data.load(args.data, args.dataset, size, args.val_split, args.test_split, args.seed,
                       args.limit_per_class, progress=True)
    images = np.concatenate([splits.train.images, splits.val.images])  # never the test images
    labels = np.concatenate([splits.train.labels, splits.val.labels])
    base = build_base(args.backbone, weights=args.weights, input_shape=(size, size, 3))
    out = args.out or os.path.join("runs", f"probe-{args.backbone}-{args.dataset or os.path.basename(os.path.normpath(args.data))}")
    result = probe.probe_cuts(base, images, labels, splits.class_names, out, args.sample, args.seed, args.batch_size)
    print(probe.format_rows(result))
    print(f"\nrecommended: --removed {result['recommended_removed']} (ends at {result['recommended_layer']}); "
          f"wrote {out}/probe.json and {out}/probe.png")
    return 0


# options a command uses itself rather than passing on in its config
RUN_OPTIONS = {"train": ("out", "resume"), "tune": ("out",), "experiment": ("out",)}


def train_config(args):
    """``train``'s options as a :class:`keras_transfer.runs.TrainConfig` (every option but RUN_OPTIONS)."""
    from keras_transfer import runs

    return runs.TrainConfig(
        data_dir=args.data, dataset=args.dataset, backbone=args.backbone, weights=args.weights,
        include_top=args.include_top, input_size=args.input_size, removed=args.removed, frozen=args.frozen,
        head=args.head, recipe=args.recipe, width=args.width, dropout=args.dropout, binary_weight=args.binary_weight,
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, fine_tune_learning_rate=args.fine_tune_learning_rate,
        transferred_lr_scale=args.transferred_lr_scale, augment=args.augment, cache_features=not args.no_cache,
        class_weight=args.class_weight, patience=None if args.patience < 0 else args.patience,
        limit_per_class=args.limit_per_class, validation_split=args.val_split, test_split=args.test_split,
        seed=args.seed, tensorboard=args.tensorboard, strategy=args.strategy, devices=args.devices,
        precision=args.precision)


def cmd_train(args) -> int:
    from keras_transfer import runs

    config = train_config(args)
    out = args.out or os.path.join("runs", f"{args.backbone}-{args.dataset or os.path.basename(os.path.normpath(args.data))}"
                                           f"-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    metrics = runs.train(config, out, resume=args.resume)
    if "export" in metrics:
        print(f"\ntest accuracy {metrics['accuracy']:.3f} on {metrics['images']} images "
              f"(majority class {metrics['majority_class_rate']:.3f}); {metrics['seconds']:.0f} s")
        print(f"run folder: {out}\nexported:   {metrics['export']}")
    return 0


def search_config(args):
    """``tune``'s options as a :class:`keras_transfer.tuning.SearchConfig` (every option but RUN_OPTIONS)."""
    from keras_transfer import tuning

    return tuning.SearchConfig(
        data_dir=args.data, dataset=args.dataset, backbone=args.backbone, weights=args.weights,
        input_size=args.input_size, recipe=args.recipe, tuner=args.tuner, trials=args.trials,
        removed_range=tuning.parse_range(args.removed_range, "--removed-range"),
        frozen_range=tuning.parse_range(args.frozen_range, "--frozen-range"), widths=tuple(args.widths),
        dropouts=tuple(args.dropouts), learning_rates=tuple(args.learning_rates), head_kinds=tuple(args.heads),
        epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, batch_size=args.batch_size,
        limit_per_class=args.limit_per_class, validation_split=args.val_split, test_split=args.test_split,
        seed=args.seed, cache_features=not args.no_cache, retrain_best=not args.no_retrain,
        strategy=args.strategy, devices=args.devices, precision=args.precision)


def cmd_tune(args) -> int:
    from keras_transfer import tuning

    config = search_config(args)
    out = args.out or os.path.join("runs", f"search-{args.backbone}-{args.dataset or os.path.basename(os.path.normpath(args.data))}")
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
    _add_data_args(p)
    add_backbone_args(p)
    p.add_argument("--removed", type=_removed, default=0,
                   help="drop the top N units of the backbone (see inspect), or 'auto': as `probe` recommends")
    p.add_argument("--frozen", default=None,
                   help="fine-tuning freezes backbone layers [:K] (a count, a layer name, or 'all'; "
                        "default: all but the top 2 units)")
    _add_model_args(p)
    p.add_argument("--epochs", type=int, default=5, help="stage 1 epochs: the head alone (default: %(default)s)")
    p.add_argument("--fine-tune-epochs", type=int, default=5, help="stage 2 epochs (default: %(default)s)")
    p.add_argument("--learning-rate", type=float, default=None, help="stage 1 learning rate (default: the recipe's)")
    p.add_argument("--fine-tune-learning-rate", type=float, default=None,
                   help="stage 2 learning rate of the head; unfrozen backbone layers train at 0.1x it in "
                        "the default recipe (default: the recipe's)")
    p.add_argument("--transferred-lr-scale", type=float, default=None,
                   help="instead of freezing layers [:K], train them at this fraction of the learning rate")
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience; -1 disables it")
    p.add_argument("--class-weight", action="store_true", help="weigh classes to balance an imbalanced dataset")
    p.add_argument("--no-cache", action="store_true", help="do not cache frozen-prefix features")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs to RUN_DIR/tensorboard")
    _add_distribute_args(p)
    p.add_argument("--out", metavar="RUN_DIR", default=None, help="run folder (default: runs/<backbone>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=cmd_train, weights="imagenet")

    from keras_transfer.heads import HEADS
    from keras_transfer.recipes import RECIPE_NAMES
    from keras_transfer.tuning import TUNERS

    p = sub.add_parser("tune", help="Keras Tuner search over removed x frozen layers (resumable, distributable)",
                       description="Search how many units to remove and to freeze (plus head width, dropout, "
                                   "learning rate). Re-running the same command resumes; KERASTUNER_TUNER_ID/"
                                   "ORACLE_IP/ORACLE_PORT make it a distributed chief or worker. Writes "
                                   "results.csv, heatmap.png, best.json and exports the retrained best model.")
    _add_data_args(p)
    add_backbone_args(p, include_top=False)  # keep_classifier is not searched, so the top is never kept
    p.add_argument("--recipe", default="default", choices=RECIPE_NAMES, help="each trial's recipe (default: %(default)s)")
    p.add_argument("--tuner", default="random", choices=TUNERS)
    p.add_argument("--trials", type=int, default=12, help="max trials (random, bayesian)")
    p.add_argument("--removed-range", default=None, metavar="A:B",
                   help="units to remove, inclusive (default 0:3); 'auto': the probe's recommendation +-1")
    p.add_argument("--frozen-range", default=None, metavar="A:B",
                   help="frozen_units to try, inclusive (freeze through the j-th unit; default: all)")
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024], help="head widths to try")
    p.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.5], help="dropout rates to try")
    p.add_argument("--learning-rates", type=float, nargs="+", default=[1e-4, 1e-3], help="fine-tuning rates to try")
    p.add_argument("--heads", nargs="+", default=["gap_dense"], choices=[h for h in HEADS if h != "keep_classifier"])
    p.add_argument("--epochs", type=int, default=2, help="head epochs per trial")
    p.add_argument("--fine-tune-epochs", type=int, default=3, help="fine-tuning epochs per trial")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-cache", action="store_true", help="do not share frozen-prefix features between trials")
    p.add_argument("--no-retrain", action="store_true", help="skip retraining/exporting the best trial")
    _add_distribute_args(p)
    p.add_argument("--out", metavar="SEARCH_DIR", default=None, help="search folder (default: runs/search-<backbone>-<data>)")
    p.set_defaults(func=cmd_tune, weights="imagenet", val_split=0.2)

    p = sub.add_parser("probe", help="score every cut of a backbone on your data (LogME, linear probe) before training",
                       description="One forward pass computes pooled features at every cut (0..n-1 units removed); "
                                   "each is scored by LogME and a 5-fold linear probe. Prints a table, writes "
                                   "probe.json and probe.png, and recommends --removed.")
    _add_data_args(p)
    add_backbone_args(p, default_weights="imagenet", include_top=False)
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
