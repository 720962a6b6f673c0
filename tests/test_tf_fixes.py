"""The TensorFlow workarounds do their job, and the bugs they work around still exist."""
import gc

import keras
import numpy as np
from tensorflow.python.framework import func_graph, ops

from keras_transfer.tf_fixes import forget_custom_gradients


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
    assert (_live_graphs(), _custom_gradients()) == before


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
