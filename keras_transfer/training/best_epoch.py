"""Which epoch's weights a stage keeps, by one rule used everywhere.

The rule: the best validation accuracy, the lower validation loss breaking ties (common on a
few dozen validation images), the earlier epoch among equals. It decides

- the weights a stage ends with (:class:`KeepBestEpoch` restores that epoch's at the end,
  whether or not early stopping ended the stage first);
- when early stopping stops (``patience`` epochs without a better epoch by the rule);
- whether fine-tuning's weights or the head stage's are kept (``recipe.keep_best``);
- a search trial's score: the validation accuracy and loss *of the weights it keeps*, which
  are also the weights saved as the trial's checkpoint (what ``tuner.get_best_models()`` and
  the exported winner load).

Without validation data a stage keeps its last epoch.
"""

from __future__ import annotations

import math

import keras


def score(logs: dict, prefix: str = "val_") -> tuple[float, float] | None:
    """``(accuracy, -loss)`` of one epoch's ``logs`` (higher is better), None without them. The
    binary auxiliary head's class accuracy is ``class_accuracy``."""
    accuracy = logs.get(f"{prefix}accuracy", logs.get(f"{prefix}class_accuracy"))
    loss = logs.get(f"{prefix}loss")
    if accuracy is None or loss is None or math.isnan(float(loss)) or math.isnan(float(accuracy)):
        return None
    return float(accuracy), -float(loss)


def kept_epoch(history: dict) -> int | None:
    """The epoch (0-based, of the epochs in ``history``) whose weights the stage kept; None
    without validation metrics (the last epoch's were kept)."""
    epochs = len(history.get("val_loss") or [])
    scores = [score({k: v[i] for k, v in history.items() if isinstance(v, list) and len(v) == epochs})
              for i in range(epochs)]
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


def kept_metrics(history: dict) -> dict | None:
    """``{"val_accuracy", "val_loss", "epoch"}`` of the kept epoch of a stage's history, or None."""
    epoch = kept_epoch(history)
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
    return (a["val_accuracy"], -a["val_loss"]) > (b["val_accuracy"], -b["val_loss"])


class KeepBestEpoch(keras.callbacks.Callback):
    """Track the best epoch by :func:`score`; stop after ``patience`` epochs without a better one
    (None: never); at the end, restore the best epoch's weights if a later epoch ended the fit."""

    def __init__(self, patience: int | None = None):
        super().__init__()
        self.patience = patience

    def on_train_begin(self, logs=None):
        self.best, self.best_epoch, self.best_weights, self.wait, self.last_epoch = None, None, None, 0, None

    def on_epoch_end(self, epoch, logs=None):
        self.last_epoch = epoch
        current = score(logs or {})
        if current is None:
            return
        if self.best is None or current > self.best:
            self.best, self.best_epoch, self.wait = current, epoch, 0
            self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None and self.best_epoch != self.last_epoch:
            self.model.set_weights(self.best_weights)
