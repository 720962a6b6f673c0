"""Building a classifier and choosing how many backbone layers are frozen."""

from __future__ import annotations

import keras

from keras_transfer import heads
from keras_transfer.backbones import build_base
from keras_transfer.surgery import backbone_of, chop, layer_index, units


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
    """Freeze all but the top two units: for InceptionV3 that is ``layers[:249]`` (through
    ``mixed8``), the count Keras's fine-tuning guide uses."""
    base = backbone_of(model)
    names = units(base)
    if len(names) < 3:
        return 0
    return layer_index(base, names[-3]) + 1


def resolve_frozen(model: keras.Model, frozen) -> int:
    """``frozen`` as a layer count: None (the default), an int, a digit string or a layer name."""
    base = backbone_of(model)
    if frozen is None:
        return default_frozen(model)
    if isinstance(frozen, str):
        if frozen == "all":
            return len(base.layers)
        if frozen.lstrip("-").isdigit():
            frozen = int(frozen)
        else:
            try:
                return layer_index(base, frozen) + 1
            except ValueError:
                raise ValueError(f"frozen={frozen!r}: {base.name} has no layer of that name; give a layer count "
                                 f"(0..{len(base.layers)}), 'all', or one of its layers, e.g. its units "
                                 f"{', '.join(units(base)[-3:])} (`keras-transfer inspect` lists them). "
                                 f"Received: frozen={frozen!r}") from None
    if not 0 <= frozen <= len(base.layers):
        raise ValueError(f"frozen={frozen} is out of range: {base.name} has {len(base.layers)} layers "
                         f"(use 0..{len(base.layers)}, 'all' or a layer name). Received: frozen={frozen!r}")
    return int(frozen)
