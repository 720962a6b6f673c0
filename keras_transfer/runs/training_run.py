"""One training run from images to an exported model, in a run folder.

    run_dir/
      config.json            what ran: the settings, and "resolved" (removed, frozen as numbers)
      data.json              the images it trained on (a digest per file): --resume on other data is refused
      skipped.csv            files that could not be read, with the reason
      probe.json, probe.png  with removed="auto": the probe's table that chose the cut
      head.csv, fine_tune.csv, state.json   per-epoch logs, which stages are finished
      fine_tune.weights.h5   the last finished stage's weights (what --resume loads)
      backup/                the interrupted stage's last epoch (only while a stage runs)
      history.png, confusion_matrix.png, metrics.json              results
      model.keras            the trained classifier (for further training, ``export``)
      export/1/              the SavedModel for serving (see keras_transfer.export.saved_model)

Everything a run is asked (data, backbone, weights, removed, frozen) is checked before the
first file is written, so a mistyped command leaves nothing behind; a folder whose earlier
command stopped before training an epoch is not a run to protect, and the next command starts
there afresh. One process at a time trains in a folder (:func:`keras_transfer.runs.run_folders.locked`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import export, plots, training
from keras_transfer.training import distribute
from keras_transfer.runs import run_folders
from keras_transfer.training import precision
from keras_transfer.training import cut_probe
from keras_transfer.learner import Learner
from keras_transfer.runs.config import TrainConfig
from keras_transfer._utils import choices
from keras_transfer._utils.atomic_files import atomic_path, read_json, remove_stale_temporaries, write_json
from keras_transfer.training.two_stage import STATE_FILE

logger = logging.getLogger(__name__)

# settings a resumed run may change (where and in which precision it computes); the rest must match
_MAY_CHANGE_ON_RESUME = ("distribute", "recipe.tensorboard")


def _finished_stages(run_dir: str) -> list[str]:
    state = read_json(os.path.join(run_dir, STATE_FILE), {}) or {}
    return [stage for stage, value in state.items() if value == "done"]


def _has_progress(run_dir: str) -> bool:
    """A finished stage, a finished run, or an interrupted stage's epochs (its backup)."""
    backup = os.path.join(run_dir, "backup")
    return bool(_finished_stages(run_dir) or os.path.exists(os.path.join(run_dir, "metrics.json"))
                or (os.path.isdir(backup) and any(files for _, _, files in os.walk(backup))))


def _same_loss_share(saved_model: dict, model) -> None:
    """Take the saved ``binary_weight`` as the one asked where both mean the same loss: folders
    written before it defaulted to None hold 0.4 for every head, where a head of one output has
    no share and a head of two has 0.4."""
    def meant(head, weight):
        return None if head not in choices.AUXILIARY_HEADS else choices.BINARY_WEIGHT if weight is None else weight

    if "binary_weight" in saved_model and (meant(saved_model.get("head", model.head), saved_model["binary_weight"])
                                           == meant(model.head, model.binary_weight)):
        saved_model["binary_weight"] = model.binary_weight


def check_run_dir(run_dir: str, config: TrainConfig, resume: bool) -> bool:
    """Whether ``run_dir`` holds a run to continue (True) or a new one starts there (False);
    raises if the command would overwrite a run or resume it with other settings. Writes nothing."""
    saved = read_json(os.path.join(run_dir, "config.json"))
    if saved is None:
        if run_folders.contents(run_dir):
            raise FileExistsError(f"run_dir {run_dir!r} is a non-empty folder that is not a run; choose another. "
                                  f"Received: run_dir={run_dir!r}")
        return False
    if not _has_progress(run_dir):
        return False  # an earlier command stopped before training an epoch: nothing to keep
    if not resume:
        raise FileExistsError(f"run_dir {run_dir!r} already holds a run; resume it (resume=True) or choose "
                              f"another run_dir (nothing was overwritten). Received: run_dir={run_dir!r}")
    _same_loss_share(saved.get("model", {}), config.model)
    changed = [c for c in run_folders.settings_changes(saved, config, _MAY_CHANGE_ON_RESUME)
               if not c[0].endswith(".verbose")]
    if changed:
        was, now = run_folders.describe_changes(changed)
        raise ValueError(f"resume: {run_dir!r} was started with {was}; resume with the same settings or "
                         f"choose another run_dir. Received: {now}")
    return True


def start_run_dir(run_dir: str, config: TrainConfig, resolved: dict, continuing: bool,
                  fingerprint: dict | None = None) -> None:
    """Write ``config.json`` (the settings and what they resolved to) and ``data.json`` (the
    images); a folder whose earlier command trained no epoch is cleared of its leftovers first."""
    if not continuing and os.path.isdir(run_dir):
        for name in ("backup", "state.json", "head.csv", "fine_tune.csv", "config.json", run_folders.DATA_FILE):
            path = os.path.join(run_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(run_dir, exist_ok=True)
    remove_stale_temporaries(run_dir)  # e.g. a model.keras being written when a run was killed
    write_json(os.path.join(run_dir, "config.json"), {**dataclasses.asdict(config), "resolved": resolved})
    if fingerprint is not None:
        write_json(os.path.join(run_dir, run_folders.DATA_FILE), fingerprint)


def train(config: TrainConfig, run_dir: str, resume: bool = False, progress: bool = True) -> dict:
    """Load data, build the model inside the strategy's scope, fine-tune, evaluate, plot, export.

    Returns ``metrics.json``'s content plus ``export`` (the version folder) and ``seconds``.
    Under a multi-worker strategy every worker trains; only the chief writes the run folder.
    Models compute in ``config.distribute.precision`` (the global Keras policy is restored afterwards).
    """
    config.check()
    with precision.using(config.distribute.precision, backbone=config.model.backbone):
        return _train(config, run_dir, resume, progress)


def _train(config: TrainConfig, run_dir: str, resume: bool, progress: bool) -> dict:
    start = time.time()
    strategy = distribute.strategy_for(config.distribute.strategy, config.distribute.devices)
    if not distribute.is_chief(strategy):
        work_dir = distribute.worker_dir()
        try:
            return _run(config, run_dir, work_dir, strategy, False, progress, start)
        finally:
            distribute.remove_worker_dir(work_dir)
    with run_folders.locked(run_dir, "keras-transfer train"):
        return _run(config, run_dir, run_dir, strategy, check_run_dir(run_dir, config, resume), progress, start)


def _run(config: TrainConfig, run_dir: str, work_dir: str, strategy, continuing: bool, progress: bool,
         start: float) -> dict:
    """The run itself; ``work_dir`` is ``run_dir`` on the chief (which writes the run folder)."""
    chief = work_dir == run_dir
    splits = config.data.load(config.model.backbone, progress=progress, include_top=config.model.include_top,
                              cost=estimate_run_cost(config, strategy))
    logger.info(splits.summary())
    fingerprint = run_folders.data_fingerprint(splits) if chief else None
    if continuing:
        run_folders.check_same_data(run_dir, fingerprint, "resume", "The splits would be drawn again, so test images "
                                "could be ones the model trained on")
    # the same calls as Python's front door: flags -> a Learner's arguments
    learner = Learner(splits, config.model.backbone, config.model.weights, config.model.removed,
                      head=config.model.head, include_top=config.model.include_top, recipe=config.make_recipe(),
                      run_dir=work_dir, strategy=strategy, precision=None, binary_weight=config.model.binary_weight)
    model, removed, frozen, recipe = learner.model, learner.removed, learner.frozen, learner.recipe
    # everything asked is valid: only now does the run folder get written
    if chief:
        start_run_dir(run_dir, config, {"removed": removed, "frozen": frozen}, continuing, fingerprint)
        data_lib.write_skipped_report(splits.skipped, os.path.join(run_dir, "skipped.csv"))
        for s in splits.skipped:
            logger.warning(f"  skipped {s.path}: {s.reason}")
        if learner.probe is not None:
            cut_probe.write(learner.probe, run_dir)
    else:
        os.makedirs(work_dir, exist_ok=True)
    histories = learner.fine_tune(resume=continuing)
    served, test_probabilities, scores, more = _scores(model, splits, recipe, strategy, chief)
    metrics = {**scores, "backbone": config.model.backbone, "weights": str(config.model.weights), "removed": removed,
               "frozen": frozen, "head": config.model.head, **more}
    if chief:
        if splits.late_skips():  # streamed files that failed when read: reported with the others
            data_lib.write_skipped_report(splits.skipped + splits.late_skips(), os.path.join(run_dir, "skipped.csv"))
        _write_report(model, served, splits, histories, metrics, config, run_dir, test_probabilities)
        metrics["seconds"] = round(time.time() - start, 1)
        write_json(os.path.join(run_dir, "metrics.json"), metrics)
    return metrics


def _scores(model, splits, recipe, strategy, chief: bool):
    """``(served, test probabilities, scores, more)``: the float32 model the export serves, its test
    probabilities (once; the workers of a cluster each predict their share), its test scores and
    what else ``metrics.json`` says of it (the training images, the skipped files, TTA)."""
    weights_digest = training.weights_fingerprint(model)
    logger.info(f"weights fingerprint {weights_digest} ({'chief' if chief else 'worker'})")
    served = precision.as_float32(model)  # the export computes in float32: test what is served
    test_probabilities = training.predict_classes(served, splits.test.images, strategy=strategy) \
        if len(splits.test) else None
    more = {"train_images": len(splits.train), "skipped_files": len(splits.skipped) + len(splits.late_skips()),
            "weights_fingerprint": weights_digest}
    if recipe.views() is not None and len(splits.test):  # the export serves one view: both are reported
        more["tta_accuracy"] = training.evaluate(served, splits.test, views=recipe.views(),
                                                 strategy=strategy)["accuracy"]
        more["tta_views"] = dataclasses.asdict(recipe.views())
    return served, test_probabilities, training.test_scores(served, splits, test_probabilities), more


def _write_report(model, served, splits, histories: dict, metrics: dict, config: TrainConfig, run_dir: str,
                  probabilities: np.ndarray | None) -> None:
    """The chief's part of a run folder: curves, confusion matrix, model.keras and the export."""
    stages = [(s, plots.read_csv_log(os.path.join(run_dir, f"{s}.csv")) or histories.get(s, {}))
              for s in ("head", "fine_tune")]
    if any(history.get("loss") for _, history in stages):  # (a run of 0 + 0 epochs has no curve)
        plots.training_curves(stages, os.path.join(run_dir, "history.png"))
    if "confusion_matrix" in metrics:
        plots.confusion_matrix(metrics["confusion_matrix"], splits.class_names,
                               os.path.join(run_dir, "confusion_matrix.png"))
        read = np.flatnonzero(training.readable(probabilities))  # (a streamed file may fail when read)
        test = splits.test.subset(read) if len(read) < len(splits.test) else splits.test
        plots.misclassified(test.images, test.labels, probabilities[read], splits.class_names,
                            os.path.join(run_dir, "misclassified.png"), names=test.paths)
        metrics["misclassified_shown"] = plots.mistakes(test.labels, probabilities[read], splits.class_names,
                                                        names=test.paths)
    with atomic_path(os.path.join(run_dir, "model.keras")) as tmp:
        model.save(tmp)
    metrics["export"] = export.export(served, os.path.join(run_dir, "export"), splits.class_names,
                                      {"backbone": config.model.backbone, "test_accuracy": metrics["accuracy"],
                                       **({"views": metrics["tta_views"], "tta_accuracy": metrics["tta_accuracy"]}
                                          if "tta_views" in metrics else {})})


def estimate_run_cost(config: TrainConfig, strategy=None) -> data_lib.RunCost | None:
    """What this run will do with its images, for ``--in-memory auto`` to weigh (None unless
    ``auto``): see :func:`keras_transfer.training.run_cost`."""
    if config.data.in_memory != "auto":
        return None
    model = config.model
    return training.run_cost(model.backbone, config.data.size(model.backbone, model.include_top), config.make_recipe(),
                             removed=0 if model.removed == "auto" else int(model.removed), include_top=model.include_top,
                             head="keep_classifier" if model.head == "keep_classifier" else "gap_dense",
                             strategy=strategy)


def export_run(run_dir: str, formats=("saved_model",)) -> str:
    """Export ``run_dir/model.keras`` as the next version under ``run_dir/export`` (``formats``:
    see :func:`keras_transfer.export.saved_model.export`)."""
    path = os.path.join(run_dir, "model.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {run_dir!r} a finished `keras-transfer train` run?")
    metrics = read_json(os.path.join(run_dir, "metrics.json"), {})
    model = training.load_model(path, advice=f"Train the run again (a new --out), or restore {path} from a copy.")
    names = metrics.get("class_names")
    if not names:
        raise FileNotFoundError(f"{run_dir}/metrics.json has no class names; re-run training.")
    return export.export(model, os.path.join(run_dir, "export"), names, {"backbone": metrics.get("backbone")},
                         formats=formats)
