"""Callbacks of a stage: the full classifier is what callbacks see and what checkpoints save."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer.files import atomic_path


class SaveBest(keras.callbacks.Callback):
    """Save the *full* classifier's weights atomically whenever ``monitor`` improves.

    Keras's ModelCheckpoint saves the model being fitted, which with the feature cache is only
    the trainable suffix; this saves the model a user reloads.
    """

    def __init__(self, full_model: keras.Model, path: str, monitor: str = "val_loss"):
        super().__init__()
        self.full_model, self.path, self.monitor = full_model, path, monitor
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            with atomic_path(self.path) as tmp:
                self.full_model.save_weights(tmp)


class SeesClassifier(keras.callbacks.Callback):
    """Gives the callbacks it wraps the full classifier while Keras fits only its trainable
    suffix on cached features (the suffix shares the classifier's layers, so the weights a
    callback reads or saves are the model's). A ``stop_training`` they set reaches the fit.
    """

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
             "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")

    def __init__(self, callbacks, classifier: keras.Model):
        super().__init__()
        self.classifier = classifier
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=classifier)

    def set_params(self, params):
        self.inner.set_params(params)

    def set_model(self, model):
        self.fitted = model  # the suffix Keras fits; the wrapped callbacks keep the classifier

    def _forward(self, hook, *args, **kwargs):
        if hook == "on_train_begin":
            self.classifier.stop_training = False
        getattr(self.inner, hook)(*args, **kwargs)
        if getattr(self.classifier, "stop_training", False):
            self.fitted.stop_training = True


for _hook in SeesClassifier.HOOKS:
    setattr(SeesClassifier, _hook, lambda self, *a, _h=_hook, **k: self._forward(_h, *a, **k))
