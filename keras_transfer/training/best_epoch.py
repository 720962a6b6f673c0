"""Which epoch's weights a stage keeps, by one rule used everywhere.

The rule: with early stopping on (``recipe.patience``), the epoch of the lowest validation loss,
the higher validation accuracy breaking ties, the earlier epoch among equals; with it off (or
without validation data), the last epoch. It decides

- the weights a stage ends with (:class:`KeepBestEpoch` restores the best epoch's at the end,
  whether or not early stopping ended the stage first);
- when early stopping stops (``patience`` epochs without a better epoch by the rule);
- whether fine-tuning's weights or the head stage's are kept (``recipe.keep_best``: the better
  kept epoch by the same order);
- a search trial's score: the validation accuracy and loss *of the weights it keeps*, which
  are also the weights saved as the trial's checkpoint (what ``tuner.get_best_models()`` and
  the exported winner load).

Loss first, not accuracy: on a few dozen validation images accuracy moves in steps of several
points and picks epochs by chance (``benchmarks/bench_quality.py``, 2026-12-06: the best
accuracy, loss breaking ties, cost the keras.io recipe 11 points on ELPV and 5 on Fashion-MNIST).
"""

from __future__ import annotations

import logging
import math

import keras

logger = logging.getLogger("keras_transfer.training")


def score(logs: dict, prefix: str = "val_") -> tuple[float, float] | None:
    """``(-loss, accuracy)`` of one epoch's ``logs`` (higher is better), None without them. The
    auxiliary heads' class accuracy is ``class_accuracy``; their loss is the weighted sum of both outputs'."""
    accuracy = logs.get(f"{prefix}accuracy", logs.get(f"{prefix}class_accuracy"))
    loss = logs.get(f"{prefix}loss")
    if accuracy is None or loss is None or math.isnan(float(loss)) or math.isnan(float(accuracy)):
        return None
    return -float(loss), float(accuracy)


def kept_epoch(history: dict, early_stopping: bool = True) -> int | None:
    """The epoch (0-based, of the epochs in ``history``) whose weights the stage kept: the best by
    :func:`score` with ``early_stopping``, else the last; None without validation metrics."""
    epochs = len(history.get("val_loss") or [])
    if not early_stopping:
        return epochs - 1 if epochs else None
    scores = [score({k: v[i] for k, v in history.items() if isinstance(v, list) and len(v) == epochs})
              for i in range(epochs)]
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


def kept_metrics(history: dict, early_stopping: bool = True) -> dict | None:
    """``{"val_accuracy", "val_loss", "epoch"}`` of the kept epoch of a stage's history, or None."""
    epoch = kept_epoch(history, early_stopping)
    if epoch is None:
        return None
    accuracy = history.get("val_accuracy", history.get("val_class_accuracy"))
    return {"val_accuracy": float(accuracy[epoch]), "val_loss": float(history["val_loss"][epoch]), "epoch": epoch}


def better(a: dict | None, b: dict | None) -> bool:
    """Whether kept metrics ``a`` are strictly better than ``b`` by the rule (None: no metrics)."""
    if a is None:
        return False
    if b is None:
        return True
    return (-a["val_loss"], a["val_accuracy"]) > (-b["val_loss"], b["val_accuracy"])


class KeepBestEpoch(keras.callbacks.Callback):
    """Track the best epoch by :func:`score`; stop after ``patience`` epochs without a better one;
    at the end, restore the best epoch's weights if a later epoch ended the fit. (``patience``
    None: early stopping is off and the fit keeps its last epoch, as a plain ``fit`` does.)"""

    def __init__(self, patience: int | None = None):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights, self.wait, self.last_epoch = None, None, None, 0, None

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        current = score(logs or {})
        if self.patience is None or current is None:
            return
        if self.best is None or current > self.best:
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.model.stop_training = True
            logger.info("early stopping after epoch %d: no better validation loss for %d epoch(s) (patience %d)",
                        epoch + 1, self.wait, self.patience)

    def on_train_end(self, logs=None):
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.best_weights)
            logger.info("kept epoch %d, the best by validation loss", self.best_epoch + 1)
