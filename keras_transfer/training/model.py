"""Building a classifier and choosing how many backbone layers are frozen."""

from __future__ import annotations

import os
import zipfile

import keras
import tensorflow as tf

from keras_transfer._utils.atomic_files import cannot_read
from keras_transfer.models import heads
from keras_transfer.models.backbones import build_base, get_backbone
from keras_transfer.models.surgery import chop, resolve_frozen


def build_model(backbone: str, num_classes: int, weights="imagenet", input_size: int | None = None,
                removed: int = 0, head: str = "gap_dense", include_top: bool = False, strategy=None,
                drop_path: float | None = None, **head_options) -> keras.Model:
    """``build_base`` -> ``chop(removed=)`` -> head, created inside ``strategy.scope()``;
    ``drop_path``: the backbone's stochastic depth (see :func:`~keras_transfer.models.backbones.build_base`)."""
    size = input_size or get_backbone(backbone).default_size
    with (strategy or tf.distribute.get_strategy()).scope():
        base = build_base(backbone, weights=weights, include_top=include_top, input_shape=(size, size, 3),
                          drop_path=drop_path)
        if removed:
            base = chop(base, removed=removed)
        return heads.build_classifier(base, num_classes, head=head, **head_options)


def default_frozen(model: keras.Model) -> int:
    """Freeze all but the top two units (see :func:`keras_transfer.models.surgery.resolve_frozen`)."""
    return resolve_frozen(model, None)


def load_model(path: str, advice: str = "Train it again, or use a copy of it.", **kwargs) -> keras.Model:
    """``keras.saving.load_model(path)``; a file that cannot be read is an error naming it (Keras
    itself says "File not found" for a ``.keras`` zip cut short)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file. Received: {path}")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member, checks its CRC-32
        if bad is not None:
            raise ValueError(f"{bad} inside it does not hold what was written (its CRC-32 differs)")
        return keras.saving.load_model(path, **kwargs)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise cannot_read(path, err, advice) from None


def load_weights(model: keras.Model, path: str, advice: str) -> None:
    """``model.load_weights(path)``; a file that cannot be read (h5py: truncated, bad signature) is an
    error naming it and saying what to do (``advice``)."""
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as err:
        raise cannot_read(path, err, advice) from None
