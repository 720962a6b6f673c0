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
from keras_transfer import distribute, export, plots, precision, recipes, training
from keras_transfer.files import atomic_path, read_json, write_json

logger = logging.getLogger(__name__)

# config fields that must match for --resume to continue the same run
_IDENTITY = ("data_dir", "dataset", "backbone", "weights", "input_size", "removed", "head", "include_top", "seed",
             "recipe", "width", "dropout")


@dataclasses.dataclass
class TrainConfig:
    data_dir: str | None = None
    dataset: str | None = None
    backbone: str = "vgg16"
    weights: str | None = "imagenet"
    include_top: bool = False
    input_size: int | None = None
    removed: int | str = 0  # or "auto": the probe's recommendation on the training images
    frozen: int | str | None = None
    head: str = "gap_dense"
    recipe: str = "default"  # see keras_transfer.recipes; the fields left None below come from it
    width: int | None = None
    dropout: float | None = None
    binary_weight: float = 0.4
    epochs: int = 5
    fine_tune_epochs: int = 5
    batch_size: int = 32
    learning_rate: float | None = None
    fine_tune_learning_rate: float | None = None
    transferred_lr_scale: float | None = None
    augment: bool = False
    cache_features: bool = True
    class_weight: bool = False
    patience: int | None = 3
    limit_per_class: int | None = None
    validation_split: float = 0.15
    test_split: float = 0.15
    seed: int = 0
    tensorboard: bool = False
    strategy: str = "auto"
    devices: str | None = None
    precision: str = "auto"  # see keras_transfer.precision
    verbose: int | str = "auto"

    def make_recipe(self) -> recipes.Recipe:
        """The named recipe with this run's epochs, rates, batch size... (``None``: the recipe's)."""
        recipe = recipes.recipe(
            self.recipe, width=self.width, dropout=self.dropout,
            head_epochs=self.epochs, fine_tune_epochs=self.fine_tune_epochs, frozen=self.frozen,
            head_learning_rate=self.learning_rate, fine_tune_learning_rate=self.fine_tune_learning_rate,
            transferred_lr_scale=self.transferred_lr_scale, batch_size=self.batch_size, augment=self.augment,
            cache_features=self.cache_features, class_weight=self.class_weight,
            seed=self.seed, tensorboard=self.tensorboard, verbose=self.verbose)
        return dataclasses.replace(recipe, patience=self.patience)  # None here means "no early stopping"

    def head_options(self) -> dict:
        options = self.make_recipe().head_options()
        if self.head == "binary_auxiliary":
            options.update(seed=self.seed, binary_weight=self.binary_weight)
        return options


def prepare_run_dir(run_dir: str, config: TrainConfig, resume: bool) -> None:
    """Create ``run_dir``; refuse to overwrite an earlier run unless resuming the same one."""
    saved = read_json(os.path.join(run_dir, "config.json"))
    if saved is not None:
        if not resume:
            raise FileExistsError(f"--out {run_dir!r} already holds a run; pass --resume to continue it, "
                                  "or choose another --out (nothing was overwritten).")
        asked = dataclasses.asdict(config)
        changed = [k for k in _IDENTITY if saved.get(k) != asked.get(k)]
        if changed:
            raise ValueError(f"--resume: {run_dir!r} was started with different "
                             + ", ".join(f"{k}={saved.get(k)!r}" for k in changed)
                             + "; resume with the same settings or choose another --out.")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        raise FileExistsError(f"--out {run_dir!r} is a non-empty folder that is not a run; choose another --out.")
    os.makedirs(run_dir, exist_ok=True)
    if saved is None:
        write_json(os.path.join(run_dir, "config.json"), dataclasses.asdict(config))


def train(config: TrainConfig, run_dir: str, resume: bool = False, progress: bool = True) -> dict:
    """Load data, build the model inside the strategy's scope, fine-tune, evaluate, plot, export.

    Returns ``metrics.json``'s content plus ``export`` (the version folder) and ``seconds``.
    Under a multi-worker strategy every worker trains; only the chief writes the run folder.
    Models compute in ``config.precision`` (the global Keras policy is restored afterwards).
    """
    with precision.using(config.precision):
        return _train(config, run_dir, resume, progress)


def _train(config: TrainConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    start = time.time()
    strategy = distribute.strategy_for(config.strategy, config.devices)
    chief = distribute.is_chief(strategy)
    work_dir = run_dir if chief else distribute.worker_dir()
    if chief:
        prepare_run_dir(run_dir, config, resume)
    else:
        os.makedirs(work_dir, exist_ok=True)
    try:
        splits = data_lib.load(config.data_dir, config.dataset, config.input_size or _default_size(config),
                               config.validation_split, config.test_split, config.seed, config.limit_per_class,
                               progress=progress)
        logger.info(splits.summary())
        if chief:
            data_lib.write_skipped_report(splits.skipped, os.path.join(run_dir, "skipped.csv"))
            for s in splits.skipped:
                logger.warning(f"  skipped {s.path}: {s.reason}")
        removed = removed_for(config, splits, run_dir if chief else None)
        model = training.build_model(config.backbone, splits.num_classes, weights=config.weights,
                                     input_size=splits.image_size[0], removed=removed, head=config.head,
                                     include_top=config.include_top, strategy=strategy, **config.head_options())
        histories = training.fine_tune(model, splits, config.make_recipe(), run_dir=work_dir, strategy=strategy,
                                       resume=resume)
        fingerprint = training.weights_fingerprint(model)
        logger.info(f"weights fingerprint {fingerprint} ({'chief' if chief else 'worker'})")
        metrics = {**training.evaluate(model, splits.test if len(splits.test) else splits.val),
                   "backbone": config.backbone, "weights": str(config.weights), "removed": removed,
                   "frozen": training.resolve_frozen(model, config.frozen), "head": config.head,
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
                                      {"backbone": config.backbone, "test_accuracy": metrics["accuracy"]})


def removed_for(config: TrainConfig, splits, out_dir: str | None = None) -> int:
    """``config.removed``, or with ``"auto"`` the probe's recommendation on the training images
    (``probe.json``/``probe.png`` written to ``out_dir``)."""
    if config.removed != "auto":
        return int(config.removed)
    from keras_transfer import probe
    from keras_transfer.backbones import build_base

    size = splits.image_size
    base = build_base(config.backbone, weights=config.weights, input_shape=(*size, 3))
    result = probe.probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names, out_dir,
                              seed=config.seed, batch_size=config.batch_size)
    logger.info("removed auto: the probe recommends removing %d unit(s) (ending at %s)",
                result["recommended_removed"], result["recommended_layer"])
    return result["recommended_removed"]


def _default_size(config: TrainConfig) -> int:
    from keras_transfer.backbones import get_backbone

    return get_backbone(config.backbone).default_size


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
