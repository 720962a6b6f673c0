"""Callbacks: a backup that cannot be read is named."""

import os

import keras
import numpy as np
import pytest


def test_a_backup_neither_of_whose_copies_can_be_read_is_named(tmp_path):
    from keras_transfer.training.callbacks import Backup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((4, 2), "float32"), np.array([0, 1, 0, 1])
    backup = str(tmp_path / "backup")

    class Stop(keras.callbacks.Callback):  # a run killed after its second epoch's backup
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[Backup(backup, double_checkpoint=True), Stop()])
    saved = [os.path.join(backup, f) for f in os.listdir(backup) if ".weights.h5" in f]
    assert len(saved) == 2  # the newest and the one before
    for path in saved:
        open(path, "wb").write(open(path, "rb").read()[:100])
    with pytest.raises(ValueError, match=f"{backup} cannot be read .*damaged or cut short. Delete {backup}"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[Backup(backup, double_checkpoint=True)])
