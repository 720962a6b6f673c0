"""The learning-rate range test (Smith 2017), as fastai's ``lr_find``: train one stage for a few
dozen steps while the rate grows exponentially, record the loss, suggest a rate, put every
weight back.

The suggestion is fastai's default, ``valley``, computed as fastai computes it: on the
smoothed loss (the first tenth and the last five steps left out), the longest run of steps
over which the loss keeps falling; the rate about half-way into it, where the loss still falls
steeply and is far from diverging.

```python
>>> rates = [10 ** (e / 2) for e in range(-12, 1)]           # 1e-6 ... 1
>>> losses = [2.3, 2.3, 2.29, 2.28, 2.2, 2.0, 1.6, 1.1, 0.8, 0.7, 0.9, 2.5, 9.0]
>>> f"{valley(rates, losses):.0e}"
'1e-04'

```
"""

from __future__ import annotations

import dataclasses
import logging
import math

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import plots
from keras_transfer.models.surgery import resolve_frozen
from keras_transfer.training import distribute, recipes
from keras_transfer.training.feature_cache import FeatureCache
from keras_transfer.training.stage import Stage

logger = logging.getLogger("keras_transfer.training")


@dataclasses.dataclass
class RateFinding:
    """What :func:`find_learning_rate` measured: the rate of each step, the smoothed loss there,
    and the suggested rate for ``stage``."""

    stage: str
    rates: list[float]
    losses: list[float]
    suggestion: float

    def plot(self, path: str | None = None):
        """The loss against the rate (log axis), the suggestion marked; a matplotlib Figure."""
        return plots.lr_finder(self.rates, self.losses, self.suggestion, path,
                               title=f"learning-rate finder ({self.stage} stage): suggested {self.suggestion:.1e}")


def valley(rates, losses) -> float:
    """fastai's ``valley`` suggestion on already smoothed ``losses`` (see the module's docstring)."""
    n = len(losses)
    longest = [1] * n  # the longest falling run of losses ending at each step
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[end] < longest[i]:
            end, start = i, i - longest[i]
    third = (end - start) / 3
    return float(rates[start + int(third) + int(third / 2)])


class _Recorder(keras.callbacks.Callback):
    """One step an epoch: records each step's loss, smoothed as fastai smooths it, and stops
    once it is over ``diverge`` x the lowest seen (or not a number)."""

    def __init__(self, rate_at, diverge: float, beta: float = 0.98):
        super().__init__()
        self.rate_at, self.diverge, self.beta = rate_at, diverge, beta
        self.rates, self.losses, self.average, self.best = [], [], 0.0, math.inf

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            self.model.stop_training = True
            return
        self.average = self.beta * self.average + (1 - self.beta) * loss
        smoothed = self.average / (1 - self.beta ** (epoch + 1))
        self.rates.append(self.rate_at(epoch))
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        if smoothed > self.diverge * self.best:
            self.model.stop_training = True


def find_learning_rate(model: keras.Model, splits, recipe: recipes.Recipe, stage: str = "head", strategy=None, cache: FeatureCache | None = None, start: float = 1e-7, end: float = 10.0,
                       steps: int = 100, diverge: float = 4.0) -> RateFinding:
    """The range test on ``stage`` of ``recipe`` as :class:`~keras_transfer.training.stage.Stage`
    would train it (the layers it freezes, its optimiser with its per-layer rate factors,
    its loss, on cached features where it would use them), the rate growing from ``start`` to
    ``end`` over at most ``steps`` steps; the model's weights are the same afterwards. The
    suggestion is for the stage's own rate (``head_learning_rate`` or ``fine_tune_learning_rate``)."""
    if stage not in ("head", "fine_tune"):
        raise ValueError(f"stage must be 'head' or 'fine_tune'. Received: stage={stage!r}")
    if not 0 < start < end or steps < 10:
        raise ValueError(f"the sweep needs 0 < start < end and at least 10 steps. "
                         f"Received: start={start}, end={end}, steps={steps}")
    if distribute.is_multi_worker(strategy or tf.distribute.get_strategy()):
        raise ValueError("lr_find runs on one machine (its sweep is a few dozen steps); run it without "
                         "TF_CONFIG, then train on the cluster with the rate it suggests.")
    weights = model.get_weights()
    frozen = resolve_frozen(model, "all" if stage == "head" else recipe.frozen)
    planned = Stage(model, splits, recipe, stage, 1, frozen, strategy, cache)
    plan = planned.plan()
    try:
        planned.freeze()
        if stage == "head":
            planned.init_head(plan.x_train if plan.at_top else None, plan.x_val if plan.at_top else None)
        grow = keras.optimizers.schedules.ExponentialDecay(start, decay_steps=steps - 1, decay_rate=end / start)
        with planned.strategy.scope():
            plan.fit_model.compile(optimizer=recipes.optimizer(recipe, stage, steps, planned.lr_scales(), grow,
                                                                       backbone=planned.backbone_paths()),
                                   **planned.compile_args())
        batch = recipe.batch_size * planned.strategy.num_replicas_in_sync
        train_ds, _, _ = planned.datasets(plan, batch)
        recorder = _Recorder(lambda step: float(start * (end / start) ** (step / (steps - 1))), diverge)
        logger.info("[%s] learning-rate finder: %d steps from %.0e to %.0e, %s", stage, steps, start, end, plan.how)
        plan.fit_model.fit(train_ds.repeat(), epochs=steps, steps_per_epoch=1, callbacks=[recorder], verbose=0,
                           shuffle=False)
    finally:
        model.set_weights(weights)
    rates, losses = recorder.rates, recorder.losses
    kept = slice(steps // 10, len(losses) - 5) if len(losses) > steps // 10 + 10 else slice(0, len(losses))
    if len(losses[kept]) < 3:
        raise RuntimeError(f"the loss diverged after {len(losses)} step(s) of the {stage} stage, from a rate of "
                           f"{start:g}; start the sweep lower (start=...).")
    suggestion = valley(rates[kept], losses[kept])
    return RateFinding(stage, rates, [float(v) for v in np.asarray(losses)], suggestion)
