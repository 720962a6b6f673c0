"""A trained classifier shipped: a float32 SavedModel (+ TFLite) that takes raw images, reloaded
to predict, and Grad-CAM to see what it looked at.

============  ===========================================================================
module        what it holds
============  ===========================================================================
saved_model   ``export`` (versioned, atomic and durable; signatures ``serving_default``,
              ``serve``, ``serve_bytes``, ``explain``), ``to_tflite``, ``resolve``
predictor     ``Predictor``: an export reloaded, on arrays and files; ``predict``
heatmaps      ``grad_cam`` and ``overlay`` on a Keras classifier
explainer     ``Explainer`` and ``explain_files``: Grad-CAM PNGs for a run's model or an export
============  ===========================================================================
"""

import lazy_loader as _lazy

# Submodules load on first use: importing one module of the package does not import the others
# (nor TensorFlow, where they need it), and `--help` stays fast.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    'explainer': ['Explainer', 'explain_files'],
    'heatmaps': ['feature_split', 'grad_cam', 'overlay'],
    'predictor': ['Predictor', 'predict'],
    'saved_model': ['FORMATS', 'LABELS_FILE', 'TFLITE_FILE', 'export', 'resolve', 'to_tflite', 'versions'],
})
