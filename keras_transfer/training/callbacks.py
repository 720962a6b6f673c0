"""Callbacks of a stage: the full classifier is what callbacks see; a damaged backup is named."""

from __future__ import annotations

import keras

from keras_transfer._utils.atomic_files import cannot_read


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


class Backup(keras.callbacks.BackupAndRestore):
    """Keras's ``BackupAndRestore`` (which falls back on its previous copy when the newest cannot be
    read); a backup neither of whose copies can be read is an error naming its folder."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as err:  # h5py: truncated file; json: a torn epoch record
            raise cannot_read(self.backup_dir, err, f"Delete {self.backup_dir} to train this stage again from its "
                                                    "first epoch.") from None


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Keras's ``SwapEMAWeights(swap_on_epoch=True)``: the callbacks after it, and validation, see
    the optimizer's moving average of the weights. Keras makes the fit end on that average only
    after its last epoch; :meth:`ender`, placed after every callback that may stop the fit, does
    so after an earlier stop too (else the fit would end on the last step's weights while the
    logs showed the average's)."""

    def __init__(self):
        super().__init__(swap_on_epoch=True)

    def ender(self) -> keras.callbacks.Callback:
        swap = self

        class _EndOnAverage(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if self.model.stop_training and swap._ema_weights_in_model:
                    swap._finalize_ema_values()  # what Keras does after the last epoch

        return _EndOnAverage()
