"""Run by test_distribute.py in a fresh process: TF's logical devices must be set up before any
other TF use. Trains the same model under MirroredStrategy over 2 logical CPU devices (per-replica
batch 8) and under one device (batch 16) from the same seed; prints the largest weight difference."""
import logging
import sys

import tensorflow as tf

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")  # the library logs the strategy

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_transfer import data, training  # noqa: E402
from keras_transfer.training import distribute


def train(strategy, per_replica_batch, cache):
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    y = (np.arange(32) % 2).astype("int32")
    x = np.clip(rng.normal(80 + 90 * y[:, None, None, None], 30, (32, 32, 32, 3)), 0, 255).astype("uint8")
    splits = data.split(data.ImageSet(x, y, ["a", "b"]), 0.0, 0.0)
    # the same gradient arithmetic on 1 or 2 replicas: a recipe with no random masks (dropout draws
    # different masks per replica) and no Adam (its normalised step magnifies rounding differences)
    from keras_transfer.training import recipes

    recipe = recipes.recipe("tutorial", width=8, head_epochs=2, fine_tune_epochs=2, frozen="block3_pool",
                            batch_size=per_replica_batch, verbose=0, cache_features=cache, seed=3)
    recipe.patience = None
    model = training.build_model("vgg16", 2, weights=None, input_size=32, removed=3, strategy=strategy,
                                 **recipe.head_options())
    training.fine_tune(model, splits, recipe, strategy=strategy)
    return model.get_weights()


cache = sys.argv[1] == "cached"
mirrored = distribute.strategy_for("mirrored", "/cpu:0,/cpu:1")
assert mirrored.num_replicas_in_sync == 2
two = train(mirrored, 8, cache)
one = train(distribute.strategy_for("one_device", "/cpu:0"), 16, cache)
print("max_weight_diff", max(float(np.abs(a - b).max()) for a, b in zip(two, one)))
print("max_weight", max(float(np.abs(a).max()) for a in one))
