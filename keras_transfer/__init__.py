"""keras-transfer: transfer learning on small image datasets with Keras 3.

Pick a pretrained backbone, remove its upper layers, freeze its first layers, put a new head
on it, fine-tune, and export a SavedModel that serves raw images. The front door:

```python
>>> import keras_transfer as kt
>>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=10, progress=False)
>>> learner = kt.Learner(splits, "vgg16", weights="hed", head_epochs=1, fine_tune_epochs=1, verbose=0)
>>> histories = learner.fine_tune()       # removed="auto": cut where the probe recommends
>>> figure = learner.plot_curves()        # every plot_* returns a matplotlib Figure

```

``kt.search`` asks Keras Tuner how many units to remove and freeze; ``kt.Predictor`` reloads an
export. The model surgery underneath is public too:

```python
>>> base = kt.chop(kt.build_base("vgg16", weights="hed", input_shape=(128, 128, 3)), removed=3)
>>> model = kt.freeze(kt.gap_dense(base, num_classes=2), "block3_pool")  # takes raw RGB 0..255

```
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
        "models.backbones": ["Backbone", "build_base", "get_backbone", "list_backbones"],
        "models.heads": ["binary_auxiliary", "build_classifier", "gap_dense", "keep_classifier", "ordinal_auxiliary"],
        "models.surgery": ["chop", "cut_points", "describe", "format_table", "freeze", "freeze_points", "units"],
        "models.ensemble": ["ensemble"],
        "learner": ["Learner", "load_data", "load_learner"],
        "data.guitars": ["sample_guitars"],
        "export.predictor": ["Predictor"],
        "training.recipes": ["Recipe", "recipe"],
        "tuning.searches": ["SearchResult", "search"],
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

