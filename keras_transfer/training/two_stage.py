"""The two-stage recipe: the head on a frozen backbone, then fine-tuning; resumable."""

from __future__ import annotations

import logging
import os
import shutil

import keras

from keras_transfer import data as data_lib
from keras_transfer._utils.atomic_files import atomic_path, read_json, write_json
from keras_transfer.models import heads
from keras_transfer.models.surgery import resolve_frozen
from keras_transfer.training import best_epoch
from keras_transfer.training.feature_cache import FeatureCache
from keras_transfer.training.model import load_weights
from keras_transfer.training.recipes import Recipe
from keras_transfer.training.stage import Stage

logger = logging.getLogger("keras_transfer.training")

STATE_FILE = "state.json"


class _StageState:
    """Which stages of a run are finished (``run_dir/STATE_FILE``) and the head stage's kept validation metrics."""

    def __init__(self, run_dir: str | None, resume: bool):
        self.run_dir = run_dir
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)
        self.values = read_json(os.path.join(run_dir, STATE_FILE), {}) if (run_dir and resume) else {}

    def _weights(self, stage: str) -> str:
        return os.path.join(self.run_dir, f"{stage}.weights.h5")

    def load_latest_finished(self, model: keras.Model, planned: list) -> int:
        """Load the weights of the last stage an earlier run finished; the number of stages done
        (its weights hold every stage before it, so only its file is kept)."""
        done = [i for i, (stage, _, _) in enumerate(planned) if self.values.get(stage) == "done"]
        if not (self.run_dir and done):
            return 0
        stage = planned[done[-1]][0]
        if not os.path.exists(self._weights(stage)):
            raise FileNotFoundError(f"{self.run_dir}/{STATE_FILE} says stage {stage!r} finished but "
                                    f"{self._weights(stage)} is missing; start a new run_dir. "
                                    f"Received: run_dir={self.run_dir!r}")
        load_weights(model, self._weights(stage), f"Start a new run_dir, or delete {self.run_dir}/{STATE_FILE} to "
                                                  f"train every stage again here.")
        logger.info("[%s] already finished in %s: loaded its weights", stage, self.run_dir)
        return done[-1] + 1

    def tidy(self) -> None:
        """Remove the backup folder every stage has finished with (each stage's backup removes itself)."""
        backup = os.path.join(self.run_dir, "backup") if self.run_dir else None
        if backup and os.path.isdir(backup) and not any(files for _, _, files in os.walk(backup)):
            shutil.rmtree(backup, ignore_errors=True)

    def finish(self, model: keras.Model, stage: str) -> None:
        if self.run_dir:
            with atomic_path(self._weights(stage)) as tmp:
                model.save_weights(tmp)
            self.values[stage] = "done"
            write_json(os.path.join(self.run_dir, STATE_FILE), self.values)
            for earlier in [s for s, v in self.values.items() if v == "done" and s != stage]:
                if os.path.exists(self._weights(earlier)):  # this stage's weights supersede it
                    os.remove(self._weights(earlier))


def _keep_best(model, stage: str, history: dict, recipe: Recipe, state: _StageState, before) -> None:
    """Record the head stage's kept validation metrics; after fine-tuning, go back to the head's
    weights (``before``) if the head's kept epoch is better by the one rule
    (:mod:`~keras_transfer.training.best_epoch`; ``recipe.keep_best``)."""
    kept = best_epoch.kept_metrics(history, recipe.patience is not None)
    if stage == "head" and kept is not None:
        state.values["head_val"] = kept
    head = state.values.get("head_val")
    if head is None and "head_val_loss" in state.values:  # recorded by a run started before the rule had accuracy
        head = {"val_loss": state.values["head_val_loss"], "val_accuracy": float("-inf")}
    if before is not None and kept is not None and best_epoch.better(head, kept):
        model.set_weights(before)
        logger.info("[fine_tune] its kept epoch (val loss %.4f, accuracy %.4f) is not better than the head stage's "
                    "(%.4f, %.4f): kept the head stage's weights", kept["val_loss"], kept["val_accuracy"],
                    head["val_loss"], head["val_accuracy"])
        history["kept_head_weights"] = True


def stages(model: keras.Model, recipe: Recipe) -> list[tuple[str, int, int]]:
    """``[(stage, epochs, k frozen backbone layers)]``: the head on a frozen backbone, then fine-tuning."""
    return [("head", recipe.head_epochs, resolve_frozen(model, "all")),
            ("fine_tune", recipe.fine_tune_epochs, resolve_frozen(model, recipe.frozen))]


def fine_tune(model: keras.Model, splits: data_lib.Splits, recipe: Recipe | None = None, run_dir: str | None = None,
              strategy=None, resume: bool = False, cache: FeatureCache | None = None,
              callbacks: list | None = None) -> dict:
    """Train ``model`` on ``splits`` with the two-stage recipe (each stage planned, then fitted);
    returns ``{stage: history}``.

    ``model``: a classifier from :mod:`keras_transfer.models.heads`, built inside ``strategy.scope()``;
    ``recipe``: default ``recipes.recipe("default")``; ``run_dir``: where checkpoints, CSV logs and
    the stage state go (None: nothing on disk); ``resume``: finished stages are loaded and the
    interrupted one restarts from its last epoch; ``cache``: a shared :class:`FeatureCache`.
    """
    recipe = recipe or Recipe()
    cache = cache if cache is not None else FeatureCache()
    if recipe.class_weight and heads.is_multi_output(model):
        raise ValueError(f"class_weight does not apply to the {heads.auxiliary_head_name(model)} head (two outputs). "
                         "Received: class_weight=True")
    state, histories = _StageState(run_dir, resume), {}
    planned = stages(model, recipe)
    finished = state.load_latest_finished(model, planned)
    todo = [(i, stage, epochs, k) for i, (stage, epochs, k) in enumerate(planned) if i >= finished and epochs > 0]
    # each stage planned once, shallowest cut first: a deeper cut's features extend the one below
    runs = {i: Stage(model, splits, recipe, stage, epochs, k, strategy, cache) for i, stage, epochs, k in todo}
    plans = {i: runs[i].plan() for i, _, _, k in sorted(todo, key=lambda t: t[3])}
    for i, stage, _, _ in todo:
        # each stage seeded on its own: a stage's randomness (dropout) does not depend on whether
        # the one before was trained, resumed from disk or reused from the cache's HeadMemo
        keras.utils.set_random_seed(recipe.seed + i)
        before = model.get_weights() if (stage == "fine_tune" and recipe.keep_best) else None
        histories[stage] = runs[i].fit(plans[i], run_dir, resume, callbacks)
        _keep_best(model, stage, histories[stage], recipe, state, before)
        state.finish(model, stage)
    state.tidy()
    return histories
