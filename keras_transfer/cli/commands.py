"""The commands beyond ``inspect``: each maps arguments to a library call, nothing more."""

from __future__ import annotations

import csv
import datetime
import json
import logging
import os
import sys

from keras_transfer import data, runs
from keras_transfer.cli import experiments
from keras_transfer.cli.options import add_group, group_from_args
from keras_transfer.data import image_paths
from keras_transfer.runs import config


def cmd_probe(args) -> int:
    from keras_transfer.training import cut_probe

    data = group_from_args(config.DataConfig, args)
    splits = data.load(args.backbone, progress=sys.stderr.isatty())  # no \r progress bars in files and pipes
    out = args.out or os.path.join("runs", f"probe-{args.backbone}-{data.name}")
    # the training split, as `train --removed auto` probes it: the same cut for the same data and seed;
    # its per-cut log lines are the table printed below
    probe_logger = logging.getLogger(cut_probe.__name__)
    level = probe_logger.level
    probe_logger.setLevel(logging.WARNING)
    try:
        result = cut_probe.recommend_for(args.backbone, args.weights, splits, data.seed, args.batch_size,
                                         sample=args.sample)
    finally:
        probe_logger.setLevel(level)
    cut_probe.write(result, out)
    print(cut_probe.format_rows(result))
    print(f"\nscored {result['images']} of the {len(splits.train)} training images (seed {data.seed}; "
          f"train --removed auto scores the same)\nrecommended: --removed {result['recommended_removed']} "
          f"(ends at {result['recommended_layer']}); wrote {out}/probe.json and {out}/probe.png")
    return 0


# options a command uses itself rather than passing on in its config
RUN_OPTIONS = {"train": ("out", "resume", "show_tf_logs"), "tune": ("out", "show_tf_logs"),
               "experiment": ("out", "show_tf_logs")}


def _progress() -> dict:
    """Keras's live progress bar (ANSI colours, carriage returns) on a terminal; one plain line
    per epoch when the output goes to a file or a pipe."""
    return {} if sys.stdout.isatty() else {"verbose": 2}


def train_config(args) -> config.TrainConfig:
    """``train``'s options as a TrainConfig (every option but RUN_OPTIONS)."""
    return config.TrainConfig(group_from_args(config.DataConfig, args), group_from_args(config.ModelConfig, args),
                              group_from_args(config.RecipeConfig, args, _progress()),
                              group_from_args(config.DistributeConfig, args))


def cmd_train(args) -> int:
    config = train_config(args)
    out = args.out or os.path.join("runs", f"{config.model.backbone}-{config.data.name}"
                                           f"-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    try:
        metrics = runs.train(config, out, resume=args.resume, progress=sys.stderr.isatty())
    except FileExistsError as err:  # the library names its parameters; say which flags they are
        raise FileExistsError(f"{err} (run_dir is --out; pass --resume to continue the run)") from None
    if "export" not in metrics:
        return 0  # a worker of a cluster: the chief reports
    if metrics["accuracy"] is None:
        why = "--test-split 0" if config.data.test_split == 0 else "every class has fewer than 3 images"
        print(f"\nno test images ({why}): no test accuracy; {metrics['seconds']:.0f} s")
    else:
        print(f"\ntest accuracy {metrics['accuracy']:.3f} on {metrics['images']} images "
              f"(majority class {metrics['majority_class_rate']:.3f}); {metrics['seconds']:.0f} s")
        if "tta_accuracy" in metrics:
            print(f"averaged over the {metrics['tta_views']['count']} {metrics['tta_views']['kind']} views "
                  f"(test-time augmentation): {metrics['tta_accuracy']:.3f}; the export serves the plain image "
                  "(predict --tta averages the views)")
    print(f"run folder: {out}\nexported:   {metrics['export']}")
    return 0


_TUNE_RECIPE = ("recipe", "head_epochs", "fine_tune_epochs", "batch_size", "cache_features", "tensorboard")


def _tune_recipe_defaults() -> dict:
    default = config.SearchConfig().recipe
    return {name: getattr(default, name) for name in ("head_epochs", "fine_tune_epochs", "patience")}


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
    summary = tuning.run_search(config, out, verbose=_progress().get("verbose", 1))
    if not summary:
        return 0  # a distributed worker: the chief reports
    print(format_search_summary(summary, out))
    return 0


def format_search_summary(summary: dict, out: str) -> str:
    """The best trial beside what it must beat (majority class, linear probe), and where things are."""
    def fmt(value):
        return "  n/a" if value is None else f"{value:.3f}"

    best, floor = summary["best"], summary["floor"]
    lp = floor["linear_probe"]
    lines = [f"\n{'':<40} {'val':>6} {'test':>6}"]
    if summary.get("export"):
        how = "retrained" if summary.get("exported_from") == "retrained" else "its kept weights"
        lines += [f"{'trial ' + str(best['trial_id']) + ' exported (' + how + ')':<40} "
                  f"{fmt(summary.get('val_accuracy')):>6} {fmt(summary.get('test_accuracy')):>6}",
                  f"{'  its score in the search':<40} {fmt(best['val_accuracy']):>6}"]
    else:
        lines.append(f"{'best trial ' + str(best['trial_id']):<40} {fmt(best['val_accuracy']):>6}")
    lines += [f"{'linear probe on pooled ' + lp['layer']:<40} {fmt(lp['val_accuracy']):>6} {fmt(lp['test_accuracy']):>6}",
              f"{'majority class':<40} {fmt(floor['majority_val']):>6} {fmt(floor['majority_test']):>6}",
              f"best: removed {best['removed']}, frozen_units {best['frozen_units']} (layers [:{best['frozen_layers']}]), "
              f"width {best['width']}, dropout {best['dropout']}, fine-tuning rate {best['learning_rate']:g}"]
    if floor["below"]:
        lines.append(f"WARNING: the {'exported model' if summary.get('export') else 'best trial'} is below the "
                     "linear-probe floor (see the warning above).")
    if floor.get("export_below_trial"):
        lines.append("WARNING: the exported model scores below its trial's score in the search (see the warning above).")
    lines.append(f"search folder: {out}" + (f"\nexported:      {summary['export']}" if summary.get("export") else ""))
    return "\n".join(lines)


def cmd_export(args) -> int:
    formats = ("saved_model", "tflite") if args.format == "tflite" else ("saved_model",)
    version = runs.export_run(args.run_dir, formats)
    print(f"exported: {version}" + (f" (and {version}/model.tflite)" if "tflite" in formats else ""))
    return 0


def cmd_ensemble(args) -> int:
    formats = ("saved_model", "tflite") if args.format == "tflite" else ("saved_model",)
    metrics = runs.ensemble_runs(args.run_dirs, args.out, formats)
    members = ", ".join(f"{a:.3f}" for a in metrics.get("member_accuracy", []))
    if metrics["accuracy"] is not None:
        print(f"test accuracy {metrics['accuracy']:.3f} on {metrics['images']} images (members: {members})")
    if "val_accuracy" in metrics:
        print(f"validation accuracy {metrics['val_accuracy']:.3f} (members: "
              f"{', '.join(f'{a:.3f}' for a in metrics['member_val_accuracy'])})")
    if "tta_accuracy" in metrics:
        print(f"averaged over the {metrics['tta_views']['count']} {metrics['tta_views']['kind']} views (test-time "
              f"augmentation): test {metrics['tta_accuracy']:.3f}"
              + (f", validation {metrics['val_tta_accuracy']:.3f}" if "val_tta_accuracy" in metrics else ""))
    print(f"exported:   {metrics['export']}" + (f" (and {metrics['export']}/model.tflite)" if "tflite" in formats
                                                 else ""))
    return 0


def prediction_rows(results: list[dict], top_k: int) -> list[dict]:
    """One row per file: path, then class/probability for the ``top_k`` classes, best first."""
    rows = []
    for r in results:
        ranked = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:top_k]
        row = {"path": r["path"]}
        for i, (name, p) in enumerate(ranked, 1):
            row.update({f"class_{i}": name, f"probability_{i}": round(p, 6)})
        rows.append(row)
    return rows


def write_predictions(rows: list[dict], skipped: list[tuple[str, str]], path: str) -> None:
    """``path`` ending .json: ``{"predictions": rows, "skipped": [...]}``; otherwise CSV (rows)."""
    from keras_transfer._utils.atomic_files import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if path.lower().endswith(".json"):
            json.dump({"predictions": rows, "skipped": [{"path": p, "reason": r} for p, r in skipped]}, f, indent=2)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["path"])
            writer.writeheader()
            writer.writerows(rows)


def cmd_predict(args) -> int:
    from keras_transfer import export

    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1. Received: --top-k {args.top_k}")
    files, skipped = image_paths(args.images)
    predictor = export.Predictor(args.model_dir)
    results, unreadable = predictor.predict_files(files, tta=args.tta) if files else ([], [])
    skipped += unreadable
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rows = prediction_rows(results, min(args.top_k, len(predictor.class_names)))
    if args.output:
        write_predictions(rows, skipped, args.output)
        print(f"wrote {len(rows)} prediction(s) to {args.output}" + (f"; skipped {len(skipped)}" if skipped else ""))
    else:
        for row in rows:
            ranked = [f"{row[f'class_{i}']}\t{row[f'probability_{i}']:.4f}" for i in range(1, len(row) // 2 + 1)]
            print("\t".join([row["path"], *ranked]))
    return 0 if rows and not skipped else 1


def cmd_explain(args) -> int:
    from keras_transfer import export

    files, skipped = image_paths(args.images)
    rows, unreadable = export.explain_files(args.model, files, args.out) if files else ([], [])
    skipped += unreadable
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for row in rows:
        print(f"{row['path']}\t{row['class']}\t{row['probability']:.4f}\t{row['figure']}")
    return 0 if rows and not skipped else 1


def cmd_sample_data(args) -> int:
    data.sample_guitars(args.out_dir, args.n_per_class, args.seed, args.size)
    print(f"wrote {3 * args.n_per_class} synthetic guitar images to {args.out_dir}/{{les_paul,sg,stratocaster}}")
    return 0


def add_commands(sub, add_backbone_args) -> None:
    """Register train/tune/probe/experiment/export/ensemble/predict/explain/sample-data on ``sub``."""
    _add_train(sub)
    _add_tune(sub)
    _add_probe(sub)
    experiments.add_experiment_command(sub, add_backbone_args)
    _add_export(sub)
    _add_ensemble(sub)
    _add_predict(sub)
    _add_explain(sub)
    _add_sample_data(sub)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a pretrained backbone on images and export it",
                       description="Two-stage fine-tuning (head, then the upper layers), evaluation on the test "
                                   "split, plots, and a SavedModel export to RUN_DIR/export.")
    for group in (config.DataConfig, config.ModelConfig, config.RecipeConfig, config.DistributeConfig):
        add_group(p, group, required_source=True)
    p.add_argument("--out", metavar="RUN_DIR", default=None, help="run folder (default: runs/<backbone>-<data>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.set_defaults(func=cmd_train)


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="Keras Tuner search over removed x frozen layers (resumable, distributable)",
                       description="Search how many units to remove and to freeze (plus head width, dropout, "
                                   "learning rate). Re-running the same command resumes; KERASTUNER_TUNER_ID/"
                                   "ORACLE_IP/ORACLE_PORT make it a distributed chief or worker. Writes "
                                   "results.csv, heatmap.png, best.json and exports the best trial's model, scored on validation and test.")
    add_group(p, config.DataConfig, required_source=True)
    add_group(p, config.ModelConfig, only=("backbone", "weights"))  # the rest of the model is searched
    add_group(p, config.RecipeConfig, only=_TUNE_RECIPE, defaults=_tune_recipe_defaults())
    add_group(p, config.SearchSpaceConfig)
    add_group(p, config.DistributeConfig)
    p.add_argument("--out", metavar="SEARCH_DIR", default=None, help="search folder (default: runs/search-<backbone>-<data>)")
    p.set_defaults(func=cmd_tune)


def _add_probe(sub) -> None:
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


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a finished run's model as a new SavedModel version (and TFLite)",
                       description="Write RUN_DIR/model.keras as the next version RUN_DIR/export/N: a float32 "
                                   "SavedModel with serving_default (uint8 images of any size) and serve_bytes "
                                   "(encoded JPEG/PNG); earlier versions are kept.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder `keras-transfer train` finished")
    p.add_argument("--format", choices=["saved_model", "tflite"], default="saved_model",
                   help="tflite: also write model.tflite beside the SavedModel (serving_default, builtin ops only)")
    p.set_defaults(func=cmd_export)


def _add_ensemble(sub) -> None:
    p = sub.add_parser("ensemble", help="average finished runs' models (same split) into one exported model",
                       description="Load the models of two or more `train` runs that split the same images the same "
                                   "way (same data, --val-split, --test-split, --seed, --input-size), average their "
                                   "class probabilities in one Keras model, score it on their validation and test "
                                   "images (and over their views), and export it to OUT/export: one SavedModel "
                                   "that serves raw images, as a run's export does.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished `keras-transfer train` run folders")
    p.add_argument("--out", metavar="DIR", required=True, help="where the ensemble's model, metrics and export go "
                                                               "(a new or empty folder)")
    p.add_argument("--format", choices=["saved_model", "tflite"], default="saved_model",
                   help="tflite: also write model.tflite beside the SavedModel")
    p.set_defaults(func=cmd_ensemble)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="classify image files and folders with an exported model",
                       description="Decode each image as training did (EXIF orientation, any colour mode), "
                                   "classify it with the export, and print or write the top classes. "
                                   "Unreadable files are skipped with their reason (exit code 1).")
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a run or search folder, its export folder (the newest "
                                                          "version) or one version of it")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (walked for image files)")
    p.add_argument("--top-k", type=int, default=1, help="how many classes to report per image, best first "
                                                        "(default: %(default)s)")
    p.add_argument("--output", metavar="FILE", default=None,
                   help="write the predictions to FILE: .json (with the skipped files) or else CSV")
    p.add_argument("--tta", action="store_true", help="average over the augmented views the model trained on "
                                                      "(test-time augmentation; an export of train --augment)")
    p.set_defaults(func=cmd_predict)


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="show which pixels made an exported model answer what it did (Grad-CAM)",
                       description="For each image, write OUT/<name>.gradcam.png: the image beside the Grad-CAM "
                                   "heatmap of the predicted class (from the export's 'explain' signature), and print "
                                   "the class. Unreadable files are skipped with their reason (exit code 1); an "
                                   "existing figure is never overwritten.")
    p.add_argument("model", metavar="MODEL", help="a run folder, its export folder (RUN_DIR/export) or one version of "
                                                  "it, or a .keras classifier taking RGB pixels (e.g. RUN_DIR/model.keras)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, or folders (walked for image files)")
    p.add_argument("--out", default="gradcam", metavar="DIR", help="folder for the figures (default: %(default)s)")
    p.set_defaults(func=cmd_explain)


def _add_sample_data(sub) -> None:
    p = sub.add_parser("sample-data", help="write a small synthetic dataset to try the package on",
                       description="guitars: drawn Stratocaster, Les Paul and SG body outlines in random colours, "
                                   "poses and backgrounds, one sub-folder per class (not photographs).")
    p.add_argument("name", choices=["guitars"], help="which dataset (guitars: 3 classes)")
    p.add_argument("out_dir", metavar="DIR", help="folder to write <class>/<image>.jpg into; files already "
                                                  "there are not overwritten")
    p.add_argument("--n-per-class", type=int, default=40, help="images per class (default: %(default)s)")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawing (default: %(default)s)")
    p.set_defaults(func=cmd_sample_data)
