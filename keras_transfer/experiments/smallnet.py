"""The small convolutional network of the A/B experiments (Yosinski et al. 2014 and the papers
that follow it), trained from scratch in seconds on Fashion-MNIST-sized images.

Its *units* are ``conv1 .. conv4, fc5``; "copy the first n units" (``transfer``) means what it
means in the paper: those layers keep the source network's weights (frozen or fine-tuned), the
ones above are re-initialised, and the classifier is always new.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from keras_transfer import data
from keras_transfer.training import recipes

logger = logging.getLogger(__name__)

UNITS = ("conv1", "conv2", "conv3", "conv4", "fc5")
CLASSIFIER = "predictions"
BINARY = "binary"
MIN_STEPS = 150


def build(input_shape, num_classes: int, seed: int, width: int = 32, binary: bool = False) -> keras.Model:
    """``conv1 conv2 pool conv3 conv4 pool flatten fc5 -> softmax`` (+ a sigmoid ``binary`` output)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((width, width, 2 * width, 2 * width), 1):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(4 * width, activation="relu", name="fc5")(x)
    x = keras.layers.Dropout(0.25, name="dropout", seed=seed)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=CLASSIFIER)(x)
    if binary:
        outputs = {CLASSIFIER: outputs, BINARY: keras.layers.Dense(1, activation="sigmoid", name=BINARY)(x)}
    return keras.Model(inputs, outputs, name="small_convnet")


def transfer(source: keras.Model, target: keras.Model, n: int, freeze: bool) -> keras.Model:
    """Copy ``source``'s first ``n`` units into ``target`` (built for the new task); freeze them or not."""
    _check_units(n, "n")
    for name in UNITS[:n]:
        target.get_layer(name).set_weights(source.get_layer(name).get_weights())
    return freeze_units(target, n if freeze else 0)


def freeze_units(model: keras.Model, n: int) -> keras.Model:
    """Freeze the first ``n`` units of ``model``; the rest train."""
    _check_units(n, "frozen")
    for i, name in enumerate(UNITS):
        model.get_layer(name).trainable = i >= n
    return model


def _check_units(n: int, argument: str) -> None:
    if not 0 <= n <= len(UNITS):
        raise ValueError(f"{argument} must be in 0..{len(UNITS)} (units {', '.join(UNITS)}). Received: {argument}={n}")


def fit(model: keras.Model, train, val, epochs: int, seed: int, learning_rate: float = 3e-3,
        lr_scales: dict | None = None, binary_weight: float = 0.0, mapping=None, batch_size: int = 64) -> keras.Model:
    """AdamW with cosine decay, keeping the weights of the best validation epoch.

    ``train``/``val`` are :class:`keras_transfer.data.image_sets.ImageSet`. ``lr_scales`` (variable path ->
    factor) lowers the rate of transferred layers. With a ``binary`` output the loss is
    ``(1 - B)·L(y) + B·L(y_b)`` with ``y_b = mapping[y]`` (Borthakur & Einhorn). At least
    ``MIN_STEPS`` steps, however few the images.
    """
    keras.utils.set_random_seed(seed)
    # a few images per class make one step an epoch: train for at least MIN_STEPS steps
    epochs = max(epochs, int(np.ceil(MIN_STEPS / np.ceil(len(train) / batch_size))))
    steps = epochs * int(np.ceil(len(train) / batch_size))
    optimizer = recipes.ScaledAdamW(learning_rate=recipes.schedule(learning_rate, steps, 0.0, True),
                                    weight_decay=1e-4, lr_scales=lr_scales)
    multi = isinstance(model.output, dict)
    if multi:
        model.compile(optimizer=optimizer, loss={CLASSIFIER: "sparse_categorical_crossentropy", BINARY: "binary_crossentropy"},
                      loss_weights={CLASSIFIER: 1.0 - binary_weight, BINARY: binary_weight},
                      metrics={CLASSIFIER: ["accuracy"]})
    else:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    targets = (lambda s: {CLASSIFIER: s.labels, BINARY: np.asarray(mapping, "float32")[s.labels][:, None]}) if multi \
        else (lambda s: s.labels)
    monitor = f"val_{CLASSIFIER}_accuracy" if multi else "val_accuracy"
    best = keras.callbacks.EarlyStopping(monitor, patience=epochs, restore_best_weights=True, mode="max")
    model.fit(**train.fit_arguments(targets(train), batch_size, shuffle=True, seed=seed),
              validation_data=val.validation_data(targets(val), batch_size), epochs=epochs, callbacks=[best], verbose=0)
    return model


def accuracy(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Test accuracy; of files, on those that can be read."""
    pairs = [(positions, model.predict(batch, batch_size=256, verbose=0)) for positions, batch in data.batches(images, 256)]
    labels = np.concatenate([labels[positions] for positions, _ in pairs])
    probs = [p[CLASSIFIER] if isinstance(p, dict) else p for _, p in pairs]
    return float(np.mean(np.argmax(np.concatenate(probs), axis=-1) == labels))


def lr_scales_for(model: keras.Model, n: int, factor: float) -> dict[str, float]:
    """``{variable path: factor}`` for the first ``n`` units' variables (a reduced rate for transferred layers)."""
    return {v.path: factor for name in UNITS[:n] for v in model.get_layer(name).trainable_variables}
