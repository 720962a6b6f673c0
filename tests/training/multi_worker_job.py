"""Run by test_distribute.py as one of two worker processes (TF_CONFIG set by the test).

``fit``: the package's stage training under MultiWorkerMirroredStrategy with a user callback and
class weights; prints one JSON line: the epochs the callback saw, the model its callback saw,
and a fingerprint of the final weights. ``plain``: Keras's bare ``fit`` without the workaround
(the canary: it must still fail while keras-team/keras#20585 is open); prints the error.
``stream FOLDER``: the folder's images streamed from their files; prints the files this worker
decoded in one pass of its training data and while training, and the trained model's test probabilities."""
import json
import sys

import keras
import numpy as np

from keras_transfer import data, training
from keras_transfer.training import distribute, recipes


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


def stream_recipe(batch_size):
    return recipes.recipe(head_epochs=2, fine_tune_epochs=1, frozen="block3_pool", batch_size=batch_size, verbose=0,
                          dropout=0.0, seed=3)  # no dropout: each replica would draw its own masks


def stream_splits(folder):
    return data.load(folder, image_size=32, validation_split=0.2, test_split=0.2, seed=0, progress=False,
                     in_memory="no")


def streamed_fit(strategy, folder):
    from keras_transfer.data import streaming

    splits = stream_splits(folder)
    share = distribute.input_share(strategy)
    read = []
    real = streaming.images_lib.decode_file
    streaming.images_lib.decode_file = lambda path: (read.append(path), real(path))[1]
    one_pass = data.to_dataset(splits.train.images, splits.train.labels, 8, shuffle=True, seed=3, share=share)
    batches = [len(y) for _, y in one_pass]
    files_read = sorted(read)
    streaming.images_lib.decode_file = real
    keras.utils.set_random_seed(0)  # the same random backbone as the test's one-process run
    model = training.build_model("vgg16", 2, weights=None, input_size=32, removed=3, strategy=strategy,
                                 **stream_recipe(4).head_options())
    training_reads = []  # every file decoded while training (features of its share, then no more)
    streaming.images_lib.decode_file = lambda path: (training_reads.append(path), real(path))[1]
    histories = training.fine_tune(model, splits, stream_recipe(4), strategy=strategy)
    streaming.images_lib.decode_file = real
    test = training.predict_classes(model, splits.test.images)
    print(json.dumps({"share": list(share), "read": files_read, "batches": batches, "test": test.tolist(),
                      "training_reads": training_reads,
                      "fingerprint": training.weights_fingerprint(model),
                      "histories": {k: {m: v for m, v in h.items() if isinstance(v, (list, bool))} for k, h in histories.items()}}),
          flush=True)


if __name__ == "__main__":
    strategy = distribute.strategy_for("multi_worker")
    assert distribute.is_multi_worker(strategy)
    if sys.argv[1] == "stream":
        streamed_fit(strategy, sys.argv[2])
    else:
        (package_fit if sys.argv[1] == "fit" else plain_fit)(strategy)
