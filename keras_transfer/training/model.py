"""Building a classifier and choosing how many backbone layers are frozen."""

from __future__ import annotations

import keras

from keras_transfer import heads
from keras_transfer.backbones import build_base
from keras_transfer.surgery import chop, resolve_frozen  # noqa: F401 - training.resolve_frozen, as before


def build_model(backbone: str, num_classes: int, weights="imagenet", input_size: int | None = None,
                removed: int = 0, head: str = "gap_dense", include_top: bool = False, strategy=None,
                **head_options) -> keras.Model:
    """``build_base`` -> ``chop(removed=)`` -> head, created inside ``strategy.scope()``."""
    import tensorflow as tf

    from keras_transfer.backbones import get_backbone

    size = input_size or get_backbone(backbone).default_size
    with (strategy or tf.distribute.get_strategy()).scope():
        base = build_base(backbone, weights=weights, include_top=include_top, input_shape=(size, size, 3))
        if removed:
            base = chop(base, removed=removed)
        return heads.build_classifier(base, num_classes, head=head, **head_options)


def default_frozen(model: keras.Model) -> int:
    """Freeze all but the top two units (see :func:`keras_transfer.surgery.resolve_frozen`)."""
    return resolve_frozen(model, None)
