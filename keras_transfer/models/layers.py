"""The few layers Keras does not have, all serializable so ``.keras`` files reload anywhere."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from keras_transfer._utils.choices import BINARY_WEIGHT

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
PREPROCESS_MODES = ("caffe", "tf", "torch", "none")


@keras.saving.register_keras_serializable(package="keras_transfer")
class Preprocess(keras.layers.Layer):
    """A backbone's ``preprocess_input`` as a layer, so the model takes raw RGB in [0, 255].

    Input ``(N, H, W, 3)`` of any numeric dtype; output float of the same shape.
    Modes match ``keras.applications.imagenet_utils.preprocess_input``.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESS_MODES:
            raise ValueError(f"Preprocess mode must be one of {PREPROCESS_MODES}, got {mode!r}.")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.array(_CAFFE_MEAN_BGR, dtype=x.dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.array(_TORCH_MEAN, dtype=x.dtype)
            std = ops.array(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="keras_transfer")
class LogProbabilities(keras.layers.Layer):
    """``log(p)`` of a softmax output: the logits up to a per-sample constant.

    Computed in float32 with a floor of 1e-30 (not Keras's epsilon of 1e-7): a confident
    1000-way softmax puts most classes far below 1e-7, and flooring them there would erase
    the logits this layer exists to recover.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, probabilities):
        p = ops.cast(probabilities, "float32")
        return ops.log(ops.maximum(p, 1e-30))

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_transfer")
class ClassPartition(keras.layers.Layer):
    """Identity on its input; carries an auxiliary head's class -> target mapping: {0, 1} for the
    binary auxiliary head, the class's rank in [0, 1] for the ordinal one.

    Keeping the mapping in a layer's config stores it inside the ``.keras`` file, so a reloaded
    model still knows how its binary targets were made and the second output's share of the loss.
    """

    def __init__(self, mapping, seed=None, binary_weight=BINARY_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        self.mapping = [int(m) if isinstance(m, numbers.Integral) else float(m) for m in mapping]
        self.seed = seed
        self.binary_weight = float(binary_weight)

    def call(self, x):
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mapping": self.mapping, "seed": self.seed,
                "binary_weight": self.binary_weight}


@keras.saving.register_keras_serializable(package="keras_transfer")
class Standardize(keras.layers.Layer):
    """``(x - mean) / sqrt(variance)`` per feature, with non-trainable ``mean`` and ``variance``
    set from the training images (``heads.adapt_feature_norm``).

    Not ``keras.layers.Normalization``: that layer keeps constants derived from its variables,
    which ``set_weights`` does not refresh, so a model whose weights were copied in standardised
    with mean 0 and variance 1. Here the call reads the variables themselves.
    """

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.mean = self.add_weight(shape=(dim,), initializer="zeros", trainable=False, name="mean")
        self.variance = self.add_weight(shape=(dim,), initializer="ones", trainable=False, name="variance")

    def call(self, x):
        mean = ops.cast(self.mean, x.dtype)
        scale = ops.cast(ops.rsqrt(ops.maximum(self.variance, 1e-12)), x.dtype)
        return (x - mean) * scale

    def compute_output_shape(self, input_shape):
        return input_shape
