"""keras-transfer: transfer learning on small image datasets with Keras 3.

Pick a pretrained backbone, remove its upper layers, freeze its first layers, put a new head
on it, fine-tune, and export a SavedModel that serves raw images.

    >>> import keras_transfer as kt
    >>> base = kt.build_base("vgg16", weights="hed", input_shape=(128, 128, 3))
    >>> base = kt.chop(base, removed=3)            # ends at block4_pool
    >>> model = kt.gap_dense(base, num_classes=2)  # takes raw RGB 0..255
    >>> kt.freeze(model, "block3_pool")            # first 11 backbone layers frozen
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of CLI output
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_transfer.backbones import BACKBONES, Backbone, build_base, get_backbone, list_backbones  # noqa: E402
from keras_transfer.heads import HEADS, binary_auxiliary, build_classifier, gap_dense, keep_classifier  # noqa: E402
from keras_transfer.surgery import chop, cut_points, describe, format_table, freeze, freeze_points, units  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "BACKBONES", "Backbone", "build_base", "get_backbone", "list_backbones",
    "HEADS", "binary_auxiliary", "build_classifier", "gap_dense", "keep_classifier",
    "chop", "cut_points", "describe", "format_table", "freeze", "freeze_points", "units",
]
