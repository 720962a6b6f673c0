"""Batched inference as numpy: the one way the package runs a model over an array of images or
features (probe, cache, evaluation). A ground-floor module: it imports nothing of the package."""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

_compiled_calls: "weakref.WeakKeyDictionary[keras.Model, object]" = weakref.WeakKeyDictionary()


def batched_call(model: keras.Model, images: np.ndarray, batch_size: int = 64, transform=None):
    """``model(images)`` in inference mode, batch by batch, as numpy (a dict or list for several outputs).

    ``transform``: applied to each float32 batch first (e.g. one augmented view, see :mod:`keras_transfer.data.augmentation`).

    A compiled call rather than ``Model.predict``: it works the same under every tf.distribute
    strategy (``predict`` shares ``fit``'s multi-worker bug) and with no strategy at all.
    """
    call = _compiled_calls.get(model)
    if call is None:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        ref = weakref.ref(model)  # a strong reference here would keep the key (and the model) alive forever
        call = _compiled_calls[model] = tf.function(lambda x: ref()(x, training=False), input_signature=[spec])
    transform = transform or (lambda x: x)
    starts = range(0, len(images), batch_size)
    if not len(starts):
        out = model.output
        spec = out if isinstance(out, dict) else {"": out}
        empty = {k: np.zeros((0, *v.shape[1:]), "float32") for k, v in spec.items()}
        return empty if isinstance(out, dict) else empty[""]
    if not isinstance(model.output, (dict, list, tuple)):
        # one output (features, probabilities): written into one array, so a large result is
        # never held twice (its chunks and their concatenation)
        out = None
        for i in starts:
            chunk = np.asarray(call(transform(tf.constant(images[i:i + batch_size], tf.float32))))
            if out is None:
                out = np.empty((len(images), *chunk.shape[1:]), chunk.dtype)
            out[i:i + len(chunk)] = chunk
        return out
    chunks = [call(transform(tf.constant(images[i:i + batch_size], tf.float32))) for i in starts]
    if isinstance(chunks[0], dict):
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}
    if isinstance(chunks[0], (list, tuple)):
        return [np.concatenate([np.asarray(c[i]) for c in chunks]) for i in range(len(chunks[0]))]
    return np.concatenate([np.asarray(c) for c in chunks])
