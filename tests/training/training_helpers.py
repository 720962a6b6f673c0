"""Small splits, recipes and VGG16 models the training tests share (VGG16 at 32x32)."""


import keras
import numpy as np

from keras_transfer import data, training


def small_splits(rng, n=36, size=32, classes=3):
    y = (np.arange(n) % classes).astype("int32")
    # class-dependent colour so there is something to learn
    x = np.clip(rng.normal(60 + 60 * y[:, None, None, None], 25, (n, size, size, 3)), 0, 255).astype("uint8")
    return data.split(data.ImageSet(x, y, [f"c{i}" for i in range(classes)]), 0.25, 0.0, seed=0)


def small_recipe(**kw):
    base = dict(head_epochs=2, fine_tune_epochs=2, frozen="block3_pool", batch_size=8, verbose=0, patience=None)
    return training.Recipe(**{**base, **kw})


def small_vgg(num_classes=3, **kw):
    return training.build_model("vgg16", num_classes, weights=None, input_size=32, removed=3, width=8, **kw)


def train_small(rng, cache, seed=1, feature_cache=None, **recipe):
    keras.utils.set_random_seed(seed)
    model = small_vgg()
    initial = [w.copy() for w in model.get_weights()]
    training.fine_tune(model, small_splits(rng), small_recipe(cache_features=cache, seed=seed, **recipe), cache=feature_cache)
    return model, initial
