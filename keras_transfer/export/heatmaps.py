"""Grad-CAM (Selvaraju et al. 2017): which pixels made the classifier answer what it answered.

The class score's gradient with respect to the last feature map, averaged over its positions,
weighs that map's channels; their weighted sum, rectified and scaled to [0, 1], is the heatmap.
It works on this package's classifiers, whose backbone is a nested model (the map is the
backbone's last 4-D output, as :func:`keras_transfer.training.prefix_model` cuts it), and on a
flat Keras model such as the seed tutorial's (its last layer with a 4-D output).

The score is the class's log-odds, its logit minus the log-sum-exp of the others' (for two
classes, the logit difference), computed from the logits of the final softmax layer: it does
not saturate when ``p`` nears 1, where the gradient of ``p`` (and, in float32, of anything
computed from ``p``) vanishes and the map goes blank on exactly the confident answers.
"""

from __future__ import annotations

import contextlib
import logging

import keras
import matplotlib
import numpy as np
import tensorflow as tf

from keras_transfer.models import heads
from keras_transfer.models.ensemble import members
from keras_transfer.models.surgery import backbone_of
from keras_transfer.training.feature_cache import prefix_model

logger = logging.getLogger(__name__)


def _last_feature_map(layers) -> keras.layers.Layer:
    for layer in reversed(layers):
        shape = getattr(layer, "output", None)
        if shape is not None and not isinstance(shape, (list, dict)) and len(shape.shape) == 4:
            return layer
    raise ValueError("Grad-CAM needs a layer with a 4-D (N, h, w, C) output; this model has none.")


def feature_split(model: keras.Model):
    """``(features, rest)``: images -> the last feature map, and that map -> class probabilities
    (for an ensemble, a list of its members' splits)."""
    if members(model):
        return [feature_split(member) for member in members(model)]
    try:
        base = backbone_of(model)
    except ValueError:
        base = None
    if base is not None and base is not model and "head" in {layer.name for layer in model.layers}:
        cut = _last_feature_map(base.layers)
        features = keras.Input(tuple(cut.output.shape[1:]), name="features")
        x = features if cut is base.layers[-1] else keras.Model(cut.output, base.output)(features)
        out = model.get_layer("head")(x)
        return prefix_model(model, cut.name), keras.Model(features, out)
    cut = _last_feature_map([layer for layer in model.layers if not isinstance(layer, keras.Model)])
    return keras.Model(model.inputs, cut.output), keras.Model(cut.output, model.output)


def _final_softmax(model: keras.Model):
    """The last Dense layer with a softmax activation in ``model`` (nested models included), or None."""
    found = None
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found = _final_softmax(layer) or found
        elif isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax:
            found = layer
    return found


@contextlib.contextmanager
def _logits(rest: keras.Model):
    """Within: ``rest`` returns logits where it returned softmax probabilities (True), or as is (False)."""
    layer = _final_softmax(rest)
    if layer is None:
        yield False
        return
    layer.activation = keras.activations.linear
    try:
        yield True
    finally:
        layer.activation = keras.activations.softmax


def grad_cam(model: keras.Model, images, class_ids=None, split=None):
    """``(heatmaps (N, h, w) in [0, 1] at the feature map's resolution, probabilities (N, n))``.

    ``images``: RGB ``(N, H, W, 3)`` at the model's input size, as the model takes them;
    ``class_ids``: the class explained per image (default: the predicted one); ``split``: a
    :func:`feature_split` of ``model`` made before (so a graph traced once can reuse it).
    An ensemble's heatmap is the mean of its members' maps (each resized to the first one's
    resolution) for the class the ensemble predicts, scaled to [0, 1] again.
    """
    if members(model):
        return _ensemble_grad_cam(model, images, class_ids, split)
    features, rest = split or feature_split(model)
    images = tf.cast(images, tf.float32)
    maps = features(images, training=False)
    with tf.GradientTape() as tape, _logits(rest) as are_logits:
        tape.watch(maps)
        out = tf.cast(heads.class_probabilities(model, rest(maps, training=False)), tf.float32)
        probabilities = tf.nn.softmax(out) if are_logits else out
        ids = tf.argmax(probabilities, axis=-1) if class_ids is None else tf.cast(class_ids, tf.int64)
        if are_logits:
            mine = tf.one_hot(ids, tf.shape(out)[-1], on_value=True, off_value=False)
            others = tf.reduce_logsumexp(tf.where(mine, tf.constant(-1e30, out.dtype), out), axis=-1)
            score = tf.gather(out, ids, batch_dims=1) - others
        else:  # no softmax layer to read logits from: the log-odds of the probabilities
            p = tf.clip_by_value(tf.gather(probabilities, ids, batch_dims=1), 1e-7, 1 - 1e-7)
            score = tf.math.log(p) - tf.math.log1p(-p)
    grads = tf.cast(tape.gradient(score, maps), tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(maps, tf.float32), axis=-1))
    cam = cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12)
    return cam, probabilities


def _ensemble_grad_cam(model: keras.Model, images, class_ids=None, split=None):
    parts = members(model)
    images = tf.cast(images, tf.float32)
    probabilities = tf.cast(model(images, training=False), tf.float32)
    ids = tf.argmax(probabilities, axis=-1) if class_ids is None else tf.cast(class_ids, tf.int64)
    maps = [grad_cam(member, images, ids, s)[0] for member, s in zip(parts, split or feature_split(model))]
    size = tuple(maps[0].shape[1:3])
    cam = tf.reduce_mean(tf.stack([tf.image.resize(m[..., None], size)[..., 0] for m in maps]), axis=0)
    return cam / tf.maximum(tf.reduce_max(cam, axis=(1, 2), keepdims=True), 1e-12), probabilities


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``heatmap`` (h, w) in [0, 1] upsampled onto it in the jet colours."""
    h, w = image.shape[:2]
    up = tf.image.resize(np.asarray(heatmap, "float32")[None, :, :, None], (h, w), method="bilinear")
    up = np.clip(np.asarray(up)[0, :, :, 0], 0.0, 1.0)
    colours = matplotlib.colormaps["jet"](up)[:, :, :3] * 255.0
    return np.clip((1 - alpha) * image.astype("float32") + alpha * colours, 0, 255).astype("uint8")
