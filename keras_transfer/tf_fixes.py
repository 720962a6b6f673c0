"""Workarounds for TensorFlow bugs this package runs into, each with the upstream issue.

Keep each one small, guarded (it must do nothing rather than fail on a TensorFlow that
changed the internals it touches) and tested, so it can be deleted when TensorFlow is fixed.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def forget_custom_gradients():
    """Drop the gradient functions that traces made inside this block register forever.

    Every traced Keras train step goes through ``tf.custom_gradient`` (the replica context's
    ``all_reduce``), which in graph mode registers a uniquely named gradient function in
    TensorFlow's global gradient registry. That function closes over the traced graph, so
    the graph is never freed: a search that builds and trains a new model per trial grows
    by every trial's graphs (tensorflow/tensorflow#97697, #27492; keras-team/keras#20245).

    The gradient was already taken when the step was traced, so once the block's models
    are done with, nothing needs these entries again. Models that outlive the block keep
    working: their traced functions do not look the registry up again.
    """
    try:
        from tensorflow.python.framework import ops

        registry = ops._gradient_registry._registry
    except (ImportError, AttributeError):  # internals moved: do nothing rather than fail
        registry = None
    before = set(registry) if registry is not None else set()
    try:
        yield
    finally:
        if registry is not None:
            for name in [n for n in registry if n not in before and n.startswith("CustomGradient")]:
                del registry[name]
