"""Heads: each builder takes a (chopped, frozen or not) backbone and the class count and
returns the full classifier ``raw RGB images -> Preprocess -> backbone -> head``.

The classifier has four top-level layers, ``images``, ``preprocess``, the backbone (named
after it) and ``head`` (a nested model from the backbone's output to the predictions), as
fastai splits a learner into body and head. Keeping the head one model lets training reattach
it to a cut-off backbone (the frozen-prefix feature cache) without copying a weight.

The model's input is raw pixels in [0, 255], shape ``(N, H, W, 3)``: the backbone's
``preprocess_input`` runs inside it, so an exported model needs nothing from this package.
The backbone stays one nested layer, so its layer indices are unchanged (see docs/design.md).
The last layer of every head computes in float32, as mixed precision needs for a stable softmax.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from keras_transfer._utils.choices import BINARY_WEIGHT
from keras_transfer.models.backbones import backbone_for
from keras_transfer.models.layers import ClassPartition, LogProbabilities, Preprocess, Standardize
from keras_transfer.models.losses import SparseSmoothedCrossentropy

INPUT_NAME = "images"


def _assemble(base: keras.Model, head_layers, name: str) -> keras.Model:
    """``images -> Preprocess -> base -> head``, ``head = head_layers(features)`` as one model."""
    row = backbone_for(base)
    features = keras.Input(shape=tuple(base.output.shape[1:]), name="features")
    head = keras.Model(features, head_layers(features), name="head")
    inputs = keras.Input(shape=tuple(base.input_shape[1:]), name=INPUT_NAME)
    x = Preprocess(row.preprocess_mode, name="preprocess")(inputs)
    return keras.Model(inputs, head(base(x)), name=name)


def _check_classes(num_classes: int, least: int = 2) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < least:
        raise ValueError(f"num_classes must be an integer >= {least}, got {num_classes!r}.")


def _check_feature_map(base: keras.Model, head: str) -> None:
    if len(base.output.shape) != 4:
        raise ValueError(
            f"{head} needs a feature map (N, h, w, C) from the backbone, got {tuple(base.output.shape)}; "
            "build the backbone with include_top=False or use head='keep_classifier'."
        )


FEATURE_NORM = "feature_norm"
VARIANCE_FLOOR = 0.01  # of the mean feature variance: see adapt_feature_norm


def _pooled(x, normalize: bool):
    """GAP, then (``normalize``) per-feature standardisation with the training images' statistics.

    A :class:`~keras_transfer.models.layers.Standardize` that :func:`adapt_feature_norm` fills in
    before the head trains: the classifier then sees what a standardised logistic regression
    sees. (BatchNorm would need many steps for its moving averages; a few epochs on a small
    dataset are not.)
    """
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if normalize:
        x = Standardize(name=FEATURE_NORM)(x)
    return x


def _hidden(x, width: int, dropout: float):
    """``Dense(width, relu)`` (none when ``width`` is 0), then dropout before the classifier."""
    if width:
        x = layers.Dense(width, activation="relu", name="head_dense")(x)
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return x


def _softmax(x, num_classes: int, name: str = "predictions", zero_init: bool = False):
    # A zero classifier starts every image at the uniform distribution (loss ln n), so the first
    # steps cannot blow up however large the features are.
    init = "zeros" if zero_init else "glorot_uniform"
    return layers.Dense(num_classes, activation="softmax", dtype="float32", kernel_initializer=init, name=name)(x)


def gap_dense(base: keras.Model, num_classes: int, width: int = 0, dropout: float = 0.2,
              normalize: bool = True) -> keras.Model:
    """GlobalAveragePooling2D -> [standardise] -> [Dense(width, relu)] -> [Dropout] -> Dense(n, softmax).

    The defaults are the default recipe's head (see :mod:`keras_transfer.training.recipes`); the seed
    tutorial's is ``width=1024, dropout=0, normalize=False`` (``recipe("tutorial").head_options()``).

    Args:
        base: a backbone from ``build_base`` (possibly chopped) whose output is a feature map
            ``(N, h, w, C)``.
        num_classes: ``n``, the size of the softmax.
        width: units of the hidden Dense layer (0: none, a linear classifier).
        dropout: dropout rate before the classifier (0 disables it).
        normalize: standardise the pooled features (statistics set by :func:`adapt_feature_norm`,
            which ``training.fine_tune`` calls) and start the classifier at zero.

    ```python
    >>> base = kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> kt.gap_dense(base, num_classes=3).output.shape
    (None, 3)

    ```
    """
    _check_classes(num_classes)
    _check_feature_map(base, "gap_dense")
    _check_head_options(width, dropout)

    def head(x):
        return _softmax(_hidden(_pooled(x, normalize), width, dropout), num_classes, zero_init=normalize)

    return _assemble(base, head, f"{base.name}_gap_dense")


def _check_head_options(width, dropout) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be an integer >= 0 (0: no hidden layer). Received: width={width!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")


def keep_classifier(base: keras.Model, num_classes: int, width: int = 1024, dropout: float = 0.0,
                    normalize: bool = True) -> keras.Model:
    """Keep the source network's ImageNet classification layer and stack new layers on it
    (Shermin et al. 2019, seed 003): ``... -> pretrained 1000-way softmax -> log ->
    LayerNormalization -> Dense(width, relu) -> Dense(n, softmax)``.

    The paper finds that new layers on the pretrained classifier need normalisation and
    scaling to work with it. Our choice: ``log`` turns the softmax back into its logits up to
    one constant per image, and LayerNormalization removes exactly that constant and rescales
    each image's 1000 scores to zero mean and unit variance (with a learned gain and bias), so
    the new Dense layer sees inputs of a fixed scale whatever the pretrained confidence was.
    Per-image normalisation also behaves the same in training and inference, unlike BatchNorm
    on the small batches this package is for.

    Args:
        base: a backbone built with ``include_top=True`` (its output is ``(N, 1000)``).
        normalize: accepted so that every head takes a recipe's ``head_options()``; this head
            always normalises (the LayerNormalization above is what the paper's method needs).

    ```python
    >>> top = kt.build_base("efficientnet_lite0", weights=None, include_top=True)
    >>> kt.keep_classifier(top, num_classes=3, width=16).output.shape
    (None, 3)

    ```
    """
    _check_classes(num_classes)
    _check_head_options(width, dropout)
    top = base.layers[-1]
    if not isinstance(top, layers.Dense) or len(base.output.shape) != 2:
        raise ValueError(
            f"keep_classifier needs the backbone's ImageNet classifier: build {base.name} with "
            "include_top=True (and do not chop it)."
        )
    from_softmax = keras.activations.serialize(top.activation) == "softmax"
    return _assemble(base, lambda x: on_classifier(x, num_classes, width, dropout, from_softmax),
                     f"{base.name}_keep_classifier")


def on_classifier(scores, num_classes: int, width: int, dropout: float, from_softmax: bool):
    """The new layers :func:`keep_classifier` stacks on a source classifier's ``scores``."""
    x = LogProbabilities(name="log_probabilities")(scores) if from_softmax else scores
    x = layers.LayerNormalization(name="classifier_norm")(x)
    return _softmax(_hidden(x, width, dropout), num_classes)


def class_partition(num_classes: int, seed: int) -> list[int]:
    """A random, fixed split of the classes into two halves: class -> 0 or 1, from ``seed``."""
    _check_classes(num_classes)
    order = np.random.default_rng(seed).permutation(num_classes)
    mapping = np.zeros(num_classes, dtype=int)
    mapping[order[num_classes // 2:]] = 1
    return mapping.tolist()


# the heads of two outputs -> the name of their second output (and of the ClassPartition carrying its targets)
AUXILIARY_OUTPUTS = {"binary_auxiliary": "binary", "ordinal_auxiliary": "rank"}


def binary_auxiliary(
    base: keras.Model,
    num_classes: int,
    width: int = 1024,
    dropout: float = 0.0,
    seed: int = 0,
    binary_weight: float = BINARY_WEIGHT,
    normalize: bool = False,
) -> keras.Model:
    """The gap_dense head plus a second output that predicts a random fixed partition of the
    classes into {0, 1} (Borthakur & Einhorn, seed 004).

    Outputs a dict ``{"class": (N, n) softmax, "binary": (N, 1) sigmoid}``; train it with
    :func:`compile_args`, which weighs the losses ``(1 - B)·L(y) + B·L(y_b)``. The mapping
    (from ``seed``) and ``B`` are stored in the model, in its ``binary`` layer's config.

    ```python
    >>> base = kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> [tuple(output.shape) for output in kt.binary_auxiliary(base, num_classes=4, width=16).outputs]
    [(None, 1), (None, 4)]

    ```
    """
    _check_classes(num_classes)
    return _with_auxiliary(base, num_classes, "binary_auxiliary", class_partition(num_classes, seed), seed, width,
                           dropout, binary_weight, normalize)


def ordinal_auxiliary(
    base: keras.Model,
    num_classes: int,
    width: int = 0,
    dropout: float = 0.2,
    binary_weight: float = BINARY_WEIGHT,
    normalize: bool = True,
) -> keras.Model:
    """The gap_dense head plus a second output that regresses where each image lies on the
    classes' order: for classes that are grades of one quantity, listed from least to most (ELPV's
    defect probability 0, 1/3, 2/3, 1; severity scores), class ``k`` of ``n`` has the target
    ``k / (n - 1)``.

    The softmax alone treats confusing 1/3 with 2/3 like confusing 0 with 1; the second output,
    a sigmoid trained by binary cross-entropy on those soft targets, tells the shared features
    that the middle grades lie between the ends. Outputs ``{"class": (N, n) softmax, "rank":
    (N, 1) sigmoid}``; the losses are weighed ``(1 - B)·L(y) + B·L(rank)`` (:func:`compile_args`),
    and the class probabilities are what is predicted and exported. Its defaults are
    :func:`gap_dense`'s: with ``width=0`` the softmax is a linear classifier that training starts
    at the linear probe.

    ```python
    >>> base = kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> model = kt.ordinal_auxiliary(base, num_classes=4)
    >>> sorted(model.output), kt.models.heads.partition_of(model).mapping
    (['class', 'rank'], [0.0, 0.3333333333333333, 0.6666666666666666, 1.0])

    ```
    """
    _check_classes(num_classes)
    ranks = [k / (num_classes - 1) for k in range(num_classes)]
    return _with_auxiliary(base, num_classes, "ordinal_auxiliary", ranks, None, width, dropout, binary_weight, normalize)


def _with_auxiliary(base, num_classes: int, name: str, mapping, seed, width: int, dropout: float,
                    binary_weight: float, normalize: bool) -> keras.Model:
    """The head ``name``: gap_dense plus a sigmoid output ``AUXILIARY_OUTPUTS[name]`` whose target is
    ``mapping[class]`` (a :class:`~keras_transfer.models.layers.ClassPartition` of that name carries
    it, and ``B``)."""
    key = AUXILIARY_OUTPUTS[name]
    if not 0.0 <= binary_weight <= 1.0:
        raise ValueError(f"binary_weight must be in [0, 1], got {binary_weight}.")
    _check_feature_map(base, name)
    _check_head_options(width, dropout)

    def head(x):
        x = _hidden(_pooled(x, normalize), width, dropout)
        y_b = layers.Dense(1, activation="sigmoid", dtype="float32", name=f"{key}_logit",
                           kernel_initializer="zeros" if normalize else "glorot_uniform")(x)
        y_b = ClassPartition(mapping, seed=seed, binary_weight=binary_weight, name=key)(y_b)
        return {"class": _softmax(x, num_classes, name="class", zero_init=normalize), key: y_b}

    return _assemble(base, head, f"{base.name}_{name}")


HEADS = {"gap_dense": gap_dense, "keep_classifier": keep_classifier, "binary_auxiliary": binary_auxiliary,
         "ordinal_auxiliary": ordinal_auxiliary}


def build_classifier(base: keras.Model, num_classes: int, head: str = "gap_dense", **options) -> keras.Model:
    """``HEADS[head](base, num_classes, **options)`` with a clear error for an unknown head.

    ```python
    >>> base = kt.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    >>> kt.build_classifier(base, 3, head="gap_dense", width=16).output.shape
    (None, 3)

    ```
    """
    if head not in HEADS:
        raise ValueError(f"Unknown head {head!r}. Known heads: {', '.join(HEADS)}.")
    return HEADS[head](base, num_classes, **options)


def partition_of(model: keras.Model) -> ClassPartition | None:
    """An auxiliary head's :class:`~keras_transfer.models.layers.ClassPartition` (its second
    output's name, class -> target mapping and loss weight), or None for single-output heads."""
    head = model.get_layer("head") if "head" in [m.name for m in model.layers] else model
    for layer in head.layers:
        if isinstance(layer, ClassPartition):
            return layer
    return None


def auxiliary_head_name(model: keras.Model) -> str | None:
    """The name of ``model``'s head of two outputs (a key of ``AUXILIARY_OUTPUTS``), else None."""
    partition = partition_of(model)
    return None if partition is None else next(h for h, key in AUXILIARY_OUTPUTS.items() if key == partition.name)


def is_multi_output(model: keras.Model) -> bool:
    return isinstance(model.output, dict)


def compile_args(model: keras.Model, label_smoothing: float = 0.0, one_hot: bool = False) -> dict:
    """``loss``, ``loss_weights`` and ``metrics`` for ``model.compile`` that fit its head.

    Labels are integer class ids (sparse), or with ``one_hot`` rows of class probabilities (one
    output only: mixup's blends); for an auxiliary head the targets are
    ``{"class": y, key: mapping[y]}`` (see :func:`targets`), ``key`` its second output
    (``binary``, ``rank``). Its metric is accuracy for a partition into {0, 1}, the mean absolute
    error for ranks (accuracy against a target of 1/3 is always 0).
    """
    if one_hot:
        return {"loss": keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                "metrics": ["accuracy"]}  # Keras reads one-hot labels' accuracy by their largest entry
    class_loss = (SparseSmoothedCrossentropy(label_smoothing) if label_smoothing
                  else "sparse_categorical_crossentropy")
    partition = partition_of(model)
    if partition is None:
        return {"loss": class_loss, "metrics": ["accuracy"]}
    b, key = partition.binary_weight, partition.name
    binary = all(m in (0, 1) for m in partition.mapping)
    return {
        "loss": {"class": class_loss, key: "binary_crossentropy"},
        "loss_weights": {"class": 1.0 - b, key: b},
        "metrics": {"class": ["accuracy"], key: ["accuracy" if binary else "mae"]},
    }


def targets(model: keras.Model, labels, one_hot: bool = False):
    """Training targets for ``model`` from integer ``labels`` (a tensor or array); with
    ``one_hot``, rows of ``num_classes`` (one output only)."""
    partition = partition_of(model)
    if one_hot:  # one output: Stage.compile_args refuses mixup for the auxiliary heads
        n = model.output.shape[-1]
        if isinstance(labels, np.ndarray):  # arrays stay arrays: pipelines index them by row
            return np.eye(n, dtype="float32")[labels]
        return ops.one_hot(ops.cast(labels, "int32"), n)
    if partition is None:
        return labels

    table = ops.convert_to_tensor(np.array(partition.mapping, dtype="float32"))
    return {"class": labels, partition.name: ops.expand_dims(ops.take(table, labels), -1)}


def class_probabilities(model: keras.Model, outputs):
    """The class-probability part of ``model``'s outputs."""
    return outputs["class"] if isinstance(outputs, dict) else outputs


def feature_norm(model: keras.Model):
    """The head's feature-standardisation layer, or None if the head has none."""
    head = model.get_layer("head")
    return next((layer for layer in head.layers if layer.name == FEATURE_NORM), None)


def _gap(base_features, dtype: str, chunk: int = 256) -> np.ndarray:
    """Global average pooling of ``(N, h, w, C)`` features in numpy, a chunk at a time (they may
    be bfloat16 and large)."""
    return np.concatenate([np.mean(np.asarray(base_features[i:i + chunk]).astype(dtype), axis=(1, 2))
                           for i in range(0, len(base_features), chunk)])


def adapt_feature_norm(model: keras.Model, base_features) -> bool:
    """Set the head's standardisation to the mean and variance of the pooled ``base_features``
    (the backbone's outputs ``(N, h, w, C)`` on the training images); False if it has none."""
    layer = feature_norm(model)
    if layer is None:
        return False
    pooled = _gap(base_features, "float64")
    variance = pooled.var(axis=0)
    # Floor each feature's variance at VARIANCE_FLOOR x the mean variance. Some pooled ReLU features
    # are nearly constant on the training images (VGG16 on Fashion-MNIST: 1% of them have variance
    # < 3e-4, the median 1.8); divided by their tiny standard deviations, once fine-tuning moves the
    # backbone a little those features jump by hundreds of standard deviations (measured: val loss
    # 0.92 -> 10 in one epoch at a backbone rate of 1e-5).
    layer.mean.assign(pooled.mean(axis=0).astype("float32"))
    layer.variance.assign(np.maximum(variance, VARIANCE_FLOOR * variance.mean()).astype("float32"))
    return True


def linear_classifier(model: keras.Model):
    """The softmax layer of a linear head (GAP -> [standardise] -> [dropout] -> Dense), else None.
    An auxiliary head's class softmax counts when it has no hidden layer: its second output
    (a sigmoid beside it) does not change what the softmax sees."""
    head = model.get_layer("head")
    partition = partition_of(model)
    softmax, aside = ("class", f"{partition.name}_logit") if partition is not None else ("predictions", None)
    if any(isinstance(layer, layers.Dense) and layer.name not in (softmax, aside) for layer in head.layers):
        return None
    return next((layer for layer in head.layers if layer.name == softmax), None)


def pooled_features(model: keras.Model, base_features) -> np.ndarray:
    """What the classifier of a linear head sees: GAP of ``base_features``, standardised if the
    head standardises (inference mode: dropout does nothing)."""
    pooled = _gap(base_features, "float32")
    norm = feature_norm(model)
    if norm is None:
        return pooled
    # in float32 numpy, whatever the model computes in (bfloat16 would cost the probe precision)
    return (pooled - np.asarray(norm.mean, "float32")) / np.sqrt(np.maximum(np.asarray(norm.variance, "float32"), 1e-12))
