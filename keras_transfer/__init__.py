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

import lazy_loader as _lazy
import wrapt as _wrapt

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of CLI output
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

# Loaded on first use: `import keras_transfer` and the command line's --help do not import
# TensorFlow; `kt.build_base` and friends import it when first called for. Private modules
# (names starting with `_`) are not offered.
__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submodules=["cli", "data", "experiments", "export", "models", "plots", "runs", "serving", "training", "tuning"],
    submod_attrs={
        "models.backbones": ["BACKBONES", "Backbone", "build_base", "get_backbone", "list_backbones"],
        "models.heads": ["HEADS", "binary_auxiliary", "build_classifier", "gap_dense", "keep_classifier"],
        "models.surgery": ["chop", "cut_points", "describe", "format_table", "freeze", "freeze_points", "units"],
        "learner": ["Learner", "load_data", "load_learner"],
        "data.guitars": ["sample_guitars"],
        "export.predictor": ["Predictor"],
        "training.recipes": ["Recipe", "recipe"],
    },
)


def _register_keras_objects(keras_module=None):
    """Put this package's layers, losses and optimisers in Keras's registry, so that plain
    ``keras.saving.load_model("RUN/model.keras")`` opens a run's model after ``import keras_transfer``."""
    import keras_transfer.models.layers  # noqa: F401
    import keras_transfer.models.losses  # noqa: F401
    import keras_transfer.training.recipes  # noqa: F401


# Run once Keras is imported (at once if it already is): `import keras_transfer` stays free of TensorFlow.
_wrapt.register_post_import_hook(_register_keras_objects, "keras")

