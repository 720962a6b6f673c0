"""Canaries for every private internal in keras_transfer._utils.keras_internals, and the TensorFlow workaround
does its job while the bug it works around still exists."""
import gc

import keras
import numpy as np
from tensorflow.python.framework import func_graph, ops

from keras_transfer._utils import keras_internals
from keras_transfer._utils.keras_internals import forget_custom_gradients


def _live_graphs() -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, func_graph.FuncGraph))


def _train_a_new_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(16, 4)).astype("float32"), np.arange(16) % 2
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    return model, x, y


def _custom_gradients() -> int:
    return sum(1 for name in ops._gradient_registry._registry if name.startswith("CustomGradient"))


def test_graphs_of_models_trained_inside_are_freed():
    _train_a_new_model()  # warm up whatever TF and Keras keep once per process
    before = _live_graphs(), _custom_gradients()
    for _ in range(3):
        with forget_custom_gradients():
            _train_a_new_model()
    # no growth (earlier tests' graphs may still be collected meanwhile, so <= rather than ==)
    assert _live_graphs() <= before[0] and _custom_gradients() <= before[1]


def test_a_model_that_outlives_the_block_still_trains():
    with forget_custom_gradients():
        model, x, y = _train_a_new_model()
    w = model.get_weights()[0].copy()
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert not np.allclose(w, model.get_weights()[0])


def test_the_tensorflow_leak_is_still_there():
    """When this fails, TensorFlow has fixed tensorflow/tensorflow#97697: delete the workaround."""
    _train_a_new_model()
    before = _live_graphs()
    for _ in range(2):
        _train_a_new_model()
    assert _live_graphs() > before


# ---- canaries: the internals still exist and mean what internals.py says

def test_keras_history_and_inbound_node_walk_a_functional_graph():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    outputs = keras.layers.Dense(2, name="out")(hidden)
    op, node_index, tensor_index = keras_internals.keras_history(outputs)
    assert op.name == "out" and (node_index, tensor_index) == (0, 0)
    node = keras_internals.inbound_node(op, node_index)
    assert not node.is_input and keras_internals.keras_history(node.input_tensors[0])[0].name == "hidden"
    assert keras_internals.inbound_node(keras_internals.keras_history(inputs)[0], 0).is_input


def test_in_multi_worker_mode_is_false_for_a_single_worker():
    import tensorflow as tf

    assert keras_internals.in_multi_worker_mode(tf.distribute.MultiWorkerMirroredStrategy()) is False


def test_tuner_is_worker_reads_keras_tuners_environment(monkeypatch):
    for name in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert keras_internals.tuner_is_worker() is False
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    assert keras_internals.tuner_is_worker() is True
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    assert keras_internals.tuner_is_worker() is False


def test_keras_tuner_bookkeeping_tells_its_own_trial_callbacks_from_the_users(tmp_path):
    import keras_tuner

    seen = []

    class Spy(keras_tuner.HyperModel):
        def build(self, hp):
            hp.Int("x", 0, 1)
            model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
            model.compile(loss="mse")
            return model

        def fit(self, hp, model, *args, **kwargs):
            seen.extend(kwargs["callbacks"])
            return {"loss": 1.0}

    tuner = keras_tuner.RandomSearch(Spy(), objective="loss", max_trials=1, directory=str(tmp_path))
    tuner.search(callbacks=[keras.callbacks.TerminateOnNaN()])
    flags = {type(cb).__name__: keras_internals.keras_tuner_bookkeeping(cb) for cb in seen}
    assert flags == {"TerminateOnNaN": False, "TunerCallback": True, "SaveBestEpoch": True}
