"""``keras-transfer ensemble``: finished runs on the same split, averaged into one exported model.

    out_dir/
      ensemble.json      the member runs and the data they share
      metrics.json       the ensemble's test scores (as ``train`` writes them), its validation
                         accuracy, each member's, and with views the TTA accuracies
      model.keras        the ensemble (a plain Keras model; ``keras-transfer export`` exports it again)
      export/1/          its SavedModel (+ ``model.tflite``), serving raw images like any run's

The members must have trained on the same images split the same way (same data, fractions and
seed: their test images are then the same, and none trained on another's test images) at the same
input size. The scores are the exported model's own, computed in float32 on the members' splits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil

from keras_transfer import export, training
from keras_transfer._utils.atomic_files import atomic_path, write_json
from keras_transfer.models.ensemble import ensemble
from keras_transfer.runs import run_folders
from keras_transfer.runs.config import TrainConfig
from keras_transfer.training import precision

logger = logging.getLogger(__name__)

ENSEMBLE_FILE = "ensemble.json"


def _same_split(configs: list[TrainConfig], run_dirs: list[str]) -> None:
    """Refuse members whose test images differ (other data, fractions, seed or input size)."""
    first = dataclasses.replace(configs[0].data, in_memory="auto")
    for run_dir, config in zip(run_dirs[1:], configs[1:]):
        other = dataclasses.replace(config.data, in_memory="auto")
        if other != first:
            changed = [f"{f.name} {getattr(first, f.name)!r} vs {getattr(other, f.name)!r}"
                       for f in dataclasses.fields(first) if getattr(first, f.name) != getattr(other, f.name)]
            raise ValueError(f"{run_dirs[0]!r} and {run_dir!r} did not split the same images the same way "
                             f"({'; '.join(changed)}): an ensemble's test images must be every member's test images. "
                             "Train the members with the same --data/--dataset, --val-split, --test-split, --seed and "
                             "--input-size.")


def ensemble_runs(run_dirs: list[str], out_dir: str, formats=("saved_model",)) -> dict:
    """Average the models of finished ``train`` runs (two or more, on the same split) into one,
    score it on their validation and test images, and export it under ``out_dir``. Returns
    ``metrics.json``'s content plus ``export`` (the version folder)."""
    if len(run_dirs) < 2:
        raise ValueError(f"an ensemble needs two or more run folders. Received: {run_dirs}")
    if os.path.isdir(out_dir) and run_folders.contents(out_dir):
        raise FileExistsError(f"out_dir {out_dir!r} is not empty; choose another (nothing was overwritten). "
                              f"Received: out_dir={out_dir!r}")
    configs = [TrainConfig.read(d) for d in run_dirs]
    _same_split(configs, run_dirs)
    paths = [os.path.join(d, "model.keras") for d in run_dirs]
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: is {os.path.dirname(path)!r} a finished `keras-transfer "
                                    f"train` run? Received: {path}")
    splits = configs[0].data.load(configs[0].model.backbone, progress=False)
    fingerprint = run_folders.data_fingerprint(splits)
    for run_dir in run_dirs:
        run_folders.check_same_data(run_dir, fingerprint, "ensemble", "Its test images would not be the ones it "
                                    "was tested on, and may be ones it trained on")
    members = [precision.as_float32(training.load_model(p)) for p in paths]
    model = ensemble(members)
    views = [c.make_recipe().views() for c in configs]
    same_views = all(v is not None for v in views) and len({v.key for v in views}) == 1
    views = views[0] if same_views else None  # TTA only over the views every member trained on
    metrics = {**training.test_scores(model, splits), "members": list(run_dirs),
               "backbones": [c.model.backbone for c in configs]}
    if len(splits.val):
        metrics["val_accuracy"] = training.evaluate(model, splits.val)["accuracy"]
        metrics["member_val_accuracy"] = [training.evaluate(m, splits.val)["accuracy"] for m in members]
    if len(splits.test):
        metrics["member_accuracy"] = [training.evaluate(m, splits.test)["accuracy"] for m in members]
    if views is not None and len(splits.test):
        metrics["tta_accuracy"] = training.evaluate(model, splits.test, views=views)["accuracy"]
        metrics["tta_views"] = dataclasses.asdict(views)
        if len(splits.val):
            metrics["val_tta_accuracy"] = training.evaluate(model, splits.val, views=views)["accuracy"]
    existed = os.path.isdir(out_dir)
    try:
        _write(out_dir, model, configs, run_dirs, fingerprint, metrics, splits, formats)
    except BaseException:
        # out_dir was empty or absent: leave it so, and the same command can be run again
        if existed:
            for name in run_folders.contents(out_dir):
                path = os.path.join(out_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        else:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return metrics


def _write(out_dir, model, configs, run_dirs, fingerprint, metrics, splits, formats) -> None:
    with run_folders.locked(out_dir, "keras-transfer ensemble"):
        write_json(os.path.join(out_dir, ENSEMBLE_FILE), {"members": list(run_dirs), "data": dataclasses.asdict(
            configs[0].data), "data_digest": fingerprint["digest"]})
        with atomic_path(os.path.join(out_dir, "model.keras")) as tmp:
            model.save(tmp)
        info = {"backbone": "+".join(metrics["backbones"]), "members": list(run_dirs),
                "test_accuracy": metrics["accuracy"],
                **({"views": metrics["tta_views"], "tta_accuracy": metrics["tta_accuracy"]} if "tta_views" in metrics
                   else {})}
        metrics["export"] = export.export(model, os.path.join(out_dir, "export"), splits.class_names, info, formats)
        write_json(os.path.join(out_dir, "metrics.json"), metrics)

