"""Run by test_distribute.py as one of two worker processes (TF_CONFIG set by the test).

``fit``: the package's stage training under MultiWorkerMirroredStrategy with a user callback and
class weights; prints one JSON line: the epochs the callback saw, the model its callback saw,
and a fingerprint of the final weights. ``plain``: Keras's bare ``fit`` without the workaround
(the canary: it must still fail while keras-team/keras#20585 is open); prints the error."""
import json
import sys

import keras
import numpy as np

from keras_transfer import data, distribute, recipes, training


class Spy(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append((epoch, self.model.name, sorted(logs or {})))


def package_fit(strategy):
    rng = np.random.default_rng(0)
    y = np.array([0] * 24 + [1] * 8, dtype="int32")  # imbalanced: class weights matter
    x = np.clip(rng.normal(80 + 90 * y[:, None, None, None], 30, (32, 32, 32, 3)), 0, 255).astype("uint8")
    splits = data.split(data.ImageSet(x, y, ["a", "b"]), 0.25, 0.0, seed=0)
    recipe = recipes.recipe(head_epochs=2, fine_tune_epochs=2, frozen="block3_pool", batch_size=4, verbose=0,
                            class_weight=True, seed=3)
    model = training.build_model("vgg16", 2, weights=None, input_size=32, removed=3, strategy=strategy,
                                 **recipe.head_options())
    spy = Spy()
    training.fine_tune(model, splits, recipe, strategy=strategy, callbacks=[spy])
    print(json.dumps({"epochs": spy.epochs, "fingerprint": training.weights_fingerprint(model)}), flush=True)


def plain_fit(strategy):
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    try:
        model.fit(x, np.arange(32) % 2, epochs=1, batch_size=8, verbose=0)
        print("PLAIN FIT WORKED", flush=True)
    except Exception as err:  # noqa: BLE001 - the canary reports whatever Keras raises
        print(f"PLAIN FIT FAILED: {type(err).__name__}: {str(err)[:200]}", flush=True)


strategy = distribute.strategy_for("multi_worker")
assert distribute.is_multi_worker(strategy)
(package_fit if sys.argv[1] == "fit" else plain_fit)(strategy)
