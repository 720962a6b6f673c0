"""Every private Keras / TensorFlow / Keras Tuner internal this package touches, in one place.

Each is a small function with a canary test in ``tests/test_internals.py``: when an upgrade
moves an internal, that test names it, instead of a search or a cut point failing somewhere
deep. The workaround for a TensorFlow bug (``forget_custom_gradients``) must do nothing
rather than fail when the internals it touches change, and has a test that fails once the
bug is fixed, so it can be deleted.

(The optimiser subclasses in :mod:`keras_transfer.recipes` override Keras's documented
extension hooks ``update_step`` / ``_use_weight_decay`` and call ``_get_variable_index``, as
Keras's own optimisers do; ``tests/test_recipes.py`` checks their per-variable rates.)
"""

from __future__ import annotations

import contextlib


# ---- Keras functional graph (keras.src.ops.node): used by surgery's cut points

def keras_history(tensor):
    """``(operation, node_index, tensor_index)`` that produced a symbolic Keras tensor."""
    return tensor._keras_history


def inbound_node(operation, node_index: int):
    """The ``Node`` (``.is_input``, ``.input_tensors``) of ``operation``'s ``node_index``-th call."""
    return operation._inbound_nodes[node_index]


# ---- tf.distribute

def in_multi_worker_mode(strategy) -> bool:
    """Whether a MultiWorkerMirroredStrategy spans several tasks (TF has no public accessor)."""
    return strategy.extended._in_multi_worker_mode()


# ---- Keras Tuner's distributed search (keras_tuner.src.distribute.utils)

def tuner_is_worker() -> bool:
    """True in a Keras Tuner worker process (a chief oracle exists and this process is not it)."""
    from keras_tuner.src.distribute import utils

    return utils.has_chief_oracle() and not utils.is_chief_oracle()


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
