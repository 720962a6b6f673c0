"""Every private Keras / TensorFlow / Keras Tuner internal this package touches, in one place.

Each is a small function with a canary test in ``tests/_utils/test_keras_internals.py``: when an upgrade
moves an internal, that test names it, instead of a search or a cut point failing somewhere
deep. The workaround for a TensorFlow bug (``forget_custom_gradients``) must do nothing
rather than fail when the internals it touches change, and has a test that fails once the
bug is fixed, so it can be deleted.

(The optimiser subclasses in :mod:`keras_transfer.training.recipes` override Keras's documented
extension hooks ``update_step`` / ``_use_weight_decay`` and call ``_get_variable_index``, as
Keras's own optimisers do; ``tests/training/test_recipes.py`` checks their per-variable rates.)
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


@contextlib.contextmanager
def fit_under_multi_worker(model, sample_batch):
    """Let ``model.fit``/``evaluate`` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Keras 3.15 on TF 2.21 fails there twice: before training, ``_maybe_symbolic_build`` reduces
    the first *distributed* batch eagerly, which the collective ops refuse ("Attempt to convert
    a value (PerReplica...)"); and after every step it reduces the step's scalar logs with
    ``strategy.reduce("MEAN", v, axis=0)``, which fails on a 0-d tensor ("Invalid reduction
    dimension 0 for input with 0 dimensions"). For this model and inside this block only:
    build from ``sample_batch`` (a local ``(x, y)`` batch), and return every log as a 1-vector
    (the mean over axis 0 of all replicas' 1-vectors is the mean of their scalars). Callbacks,
    class weights, loss scaling and metrics are then Keras's own.
    """
    import keras
    import tensorflow as tf

    cls = type(model)

    def vector_logs(step):
        return lambda data: keras.tree.map_structure(lambda v: tf.reshape(v, [1]), step(data))

    patches = {"_maybe_symbolic_build": lambda iterator=None, data_batch=None: cls._maybe_symbolic_build(
                   model, data_batch=sample_batch),
               "train_step": vector_logs(model.train_step), "test_step": vector_logs(model.test_step)}
    model.__dict__.update(patches)  # instance attributes shadow the class's methods
    model.train_function = model.test_function = None  # trace again, with the wrapped steps
    try:
        yield model
    finally:
        for name in patches:
            model.__dict__.pop(name, None)
        model.train_function = model.test_function = None


# ---- Keras Tuner's distributed search (keras_tuner.src.distribute.utils)

def keras_tuner_checkpoint(callback) -> bool:
    """Whether ``callback`` is Keras Tuner's best-epoch checkpoint of a trial (its ``filepath`` is
    where ``tuner.load_model`` and Hyperband read the trial's weights)."""
    from keras_tuner.src.engine import tuner_utils

    return isinstance(callback, tuner_utils.SaveBestEpoch)


def keras_tuner_bookkeeping(callback) -> bool:
    """Whether ``callback`` is one Keras Tuner adds to every trial itself (its epoch hooks and its
    best-epoch checkpoint: keras_tuner.src.engine.tuner_utils), not one a user passed."""
    from keras_tuner.src.engine import tuner_utils

    return isinstance(callback, (tuner_utils.TunerCallback, tuner_utils.SaveBestEpoch))


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
