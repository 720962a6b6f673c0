"""One training run from images to an exported model, in a run folder.

    run_dir/
      config.json            what was asked (a resumed run must ask the same)
      skipped.csv            files that could not be read, with the reason
      head.csv, fine_tune.csv, state.json, backup/, *.weights.h5   logs and checkpoints
      history.png, confusion_matrix.png, metrics.json              results
      model.keras            the trained classifier
      export/1/              the SavedModel for serving (see keras_transfer.export)
"""

from __future__ import annotations

import logging
import dataclasses
import os
import time

import keras

from keras_transfer import data as data_lib
from keras_transfer import distribute, export, plots, precision, training
from keras_transfer.config import TrainConfig  # noqa: F401 - runs.TrainConfig, as before
from keras_transfer.files import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

# config fields that must match for resume=True to continue the same run
_IDENTITY = {"data": ("data_dir", "dataset", "input_size", "seed"),
             "model": ("backbone", "weights", "removed", "head", "include_top", "width", "dropout"),
             "recipe": ("recipe",)}


def prepare_run_dir(run_dir: str, config: TrainConfig, resume: bool) -> None:
    """Create ``run_dir``; refuse to overwrite an earlier run unless resuming the same one."""
    saved = read_json(os.path.join(run_dir, "config.json"))
    if saved is not None:
        if not resume:
            raise FileExistsError(f"run_dir {run_dir!r} already holds a run; resume it (resume=True) or choose "
                                  f"another run_dir (nothing was overwritten). Received: run_dir={run_dir!r}")
        asked = dataclasses.asdict(config)
        changed = [f"{g}.{k}" for g, keys in _IDENTITY.items() for k in keys
                   if saved.get(g, {}).get(k) != asked[g][k]]
        if changed:
            raise ValueError(f"resume: {run_dir!r} was started with different "
                             + ", ".join(f"{k}={saved.get(k.split('.')[0], {}).get(k.split('.')[1])!r}" for k in changed)
                             + "; resume with the same settings or choose another run_dir.")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        raise FileExistsError(f"run_dir {run_dir!r} is a non-empty folder that is not a run; choose another. "
                              f"Received: run_dir={run_dir!r}")
    os.makedirs(run_dir, exist_ok=True)
    if saved is None:
        write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))


def train(config: TrainConfig, run_dir: str, resume: bool = False, progress: bool = True) -> dict:
    """Load data, build the model inside the strategy's scope, fine-tune, evaluate, plot, export.

    Returns ``metrics.json``'s content plus ``export`` (the version folder) and ``seconds``.
    Under a multi-worker strategy every worker trains; only the chief writes the run folder.
    Models compute in ``config.distribute.precision`` (the global Keras policy is restored afterwards).
    """
    with precision.using(config.distribute.precision):
        return _train(config, run_dir, resume, progress)


def _train(config: TrainConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    start = time.time()
    strategy = distribute.strategy_for(config.distribute.strategy, config.distribute.devices)
    chief = distribute.is_chief(strategy)
    work_dir = run_dir if chief else distribute.worker_dir()
    if chief:
        prepare_run_dir(run_dir, config, resume)
    else:
        os.makedirs(work_dir, exist_ok=True)
    try:
        splits = config.data.load(config.model.backbone, progress=progress)
        logger.info(splits.summary())
        if chief:
            data_lib.write_skipped_report(splits.skipped, os.path.join(run_dir, "skipped.csv"))
            for s in splits.skipped:
                logger.warning(f"  skipped {s.path}: {s.reason}")
        removed = removed_for(config, splits, run_dir if chief else None)
        model = training.build_model(config.model.backbone, splits.num_classes, weights=config.model.weights,
                                     input_size=splits.image_size[0], removed=removed, head=config.model.head,
                                     include_top=config.model.include_top, strategy=strategy, **config.head_options())
        histories = training.fine_tune(model, splits, config.make_recipe(), run_dir=work_dir, strategy=strategy,
                                       resume=resume)
        fingerprint = training.weights_fingerprint(model)
        logger.info(f"weights fingerprint {fingerprint} ({'chief' if chief else 'worker'})")
        metrics = {**training.evaluate(model, splits.test if len(splits.test) else splits.val),
                   "backbone": config.model.backbone, "weights": str(config.model.weights), "removed": removed,
                   "frozen": training.resolve_frozen(model, config.recipe.frozen), "head": config.model.head,
                   "train_images": len(splits.train), "skipped_files": len(splits.skipped),
                   "weights_fingerprint": fingerprint}
        if chief:
            _write_report(model, splits, histories, metrics, config, run_dir)
            metrics["seconds"] = round(time.time() - start, 1)
            write_json(os.path.join(run_dir, "metrics.json"), metrics)
        return metrics
    finally:
        if not chief:
            distribute.remove_worker_dir(work_dir)


def _write_report(model, splits, histories: dict, metrics: dict, config: TrainConfig, run_dir: str) -> None:
    """The chief's part of a run folder: curves, confusion matrix, model.keras and the export."""
    stages = [(s, plots.read_csv_log(os.path.join(run_dir, f"{s}.csv")) or histories.get(s, {}))
              for s in ("head", "fine_tune")]
    plots.training_curves(stages, os.path.join(run_dir, "history.png"))
    plots.confusion_matrix(metrics["confusion_matrix"], splits.class_names, os.path.join(run_dir, "confusion_matrix.png"))
    with atomic_path(os.path.join(run_dir, "model.keras")) as tmp:
        model.save(tmp)
    metrics["export"] = export.export(model, os.path.join(run_dir, "export"), splits.class_names,
                                      {"backbone": config.model.backbone, "test_accuracy": metrics["accuracy"]})


def removed_for(config: TrainConfig, splits, out_dir: str | None = None) -> int:
    """``config.model.removed``, or with ``"auto"`` the probe's recommendation on the training images
    (``probe.json``/``probe.png`` written to ``out_dir``)."""
    if config.model.removed != "auto":
        return int(config.model.removed)
    from keras_transfer import probe
    from keras_transfer.backbones import build_base

    size = splits.image_size
    base = build_base(config.model.backbone, weights=config.model.weights, input_shape=(*size, 3))
    result = probe.probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names, out_dir,
                              seed=config.data.seed, batch_size=config.recipe.batch_size)
    logger.info("removed auto: the probe recommends removing %d unit(s) (ending at %s)",
                result["recommended_removed"], result["recommended_layer"])
    return result["recommended_removed"]


def export_run(run_dir: str) -> str:
    """Export ``run_dir/model.keras`` as the next version under ``run_dir/export``."""
    path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir!r} a finished `keras-transfer train` run?")
    metrics = read_json(os.path.join(run_dir, "metrics.json"), {})
    model = keras.saving.load_model(path)
    names = metrics.get("class_names")
    if not names:
        raise FileNotFoundError(f"{run_dir}/metrics.json has no class names; re-run training.")
    return export.export(model, os.path.join(run_dir, "export"), names, {"backbone": metrics.get("backbone")})
