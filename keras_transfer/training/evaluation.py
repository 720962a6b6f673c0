"""Predictions and metrics of a trained classifier."""

from __future__ import annotations

import logging

import keras
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from keras_transfer import data as data_lib
from keras_transfer.models import heads
from keras_transfer.training import distribute
from keras_transfer.training.batched_inference import batched_call
from keras_transfer.training.feature_cache import _fingerprint

logger = logging.getLogger("keras_transfer.training")


def predict_classes(model: keras.Model, images: np.ndarray, batch_size: int = 64, views=None,
                    strategy=None) -> np.ndarray:
    """Class probabilities ``(N, n)`` for uint8/float images ``(N, H, W, 3)``; with ``views``
    (:class:`keras_transfer.data.augmentation.Views`), their mean over every view (test-time augmentation).
    Files (:class:`~keras_transfer.data.streaming.FileImages`) are read batch by batch; the row of a
    file that cannot be read now is NaN (see :func:`readable`). Under a multi-worker
    ``strategy`` each worker predicts its share (every W-th image) and all gather the rows."""
    if strategy is not None and distribute.is_multi_worker(strategy):
        workers, index = distribute.input_share(strategy)
        mine = np.arange(index, len(images), workers)
        local = predict_classes(model, data_lib.take(images, mine), batch_size, views)
        n = int((model.output["class"] if isinstance(model.output, dict) else model.output).shape[-1])
        local = local if len(local) else np.zeros((0, n), "float32")
        out = np.empty((len(images), n), "float32")
        out[distribute.all_gather_rows(strategy, mine)] = distribute.all_gather_rows(strategy, local.astype("float32"))
        return out
    out = None
    for positions, batch in data_lib.batches(images, batch_size):  # an array whole, files batch by batch
        probabilities = _probabilities(model, batch, batch_size, views)
        if out is None and np.array_equal(positions, np.arange(len(images))):
            return probabilities  # every image, in order: one chunk
        if out is None:
            out = np.full((len(images), probabilities.shape[1]), np.nan, "float32")
        out[positions] = probabilities
    return out if out is not None else np.full((len(images), 1), np.nan, "float32")


def _probabilities(model: keras.Model, images: np.ndarray, batch_size: int, views=None) -> np.ndarray:
    if views is None:
        return np.asarray(heads.class_probabilities(model, batched_call(model, images, batch_size)))
    total = 0.0
    for v in range(views.count):
        out = batched_call(model, images, batch_size, lambda x, v=v: views.apply(x, v))
        total = total + np.asarray(heads.class_probabilities(model, out))
    return total / views.count


def evaluate(model: keras.Model, split: data_lib.ImageSet, batch_size: int = 64, views=None, strategy=None,
             probabilities: np.ndarray | None = None) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix on ``split``
    (with ``views``: of the probabilities averaged over them; ``strategy``: see
    :func:`predict_classes`), or of ``probabilities`` already computed for it."""
    labels = list(range(len(split.class_names)))
    if not len(split):
        raise ValueError("evaluate needs at least one image; give a split with images (e.g. a test fraction > 0). "
                         "Received: a split of 0 images")
    if probabilities is None:
        probabilities = predict_classes(model, split.images, batch_size, views, strategy)
    ok = readable(probabilities)
    if not ok.all():
        logger.warning("%d of %d images could not be read now: scored on the other %d", int((~ok).sum()), len(split),
                       int(ok.sum()))
        split = split.subset(np.flatnonzero(ok))
    pred = probabilities[ok].argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(split.labels, pred, labels=labels, zero_division=0)
    return {
        "images": int(len(split)),
        "accuracy": float(np.mean(pred == split.labels)),
        "majority_class_rate": float(np.bincount(split.labels).max() / len(split)),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, name in enumerate(split.class_names)},
        "confusion_matrix": confusion_matrix(split.labels, pred, labels=labels).tolist(),
        "class_names": list(split.class_names),
    }


def readable(probabilities: np.ndarray) -> np.ndarray:
    """Which rows of :func:`predict_classes` are images that were read (not NaN)."""
    return ~np.isnan(probabilities).any(axis=1)


def test_scores(model: keras.Model, splits: data_lib.Splits, probabilities: np.ndarray | None = None) -> dict:
    """:func:`evaluate` on the test split (or of its ``probabilities`` already computed); with no
    test images ``accuracy`` is None and the validation images' metrics are kept apart under
    ``validation`` (they chose the head and stopped training: not a test)."""
    if len(splits.test):
        return evaluate(model, splits.test, probabilities=probabilities)
    validation = evaluate(model, splits.val) if len(splits.val) else None
    logger.warning("no test images: no test accuracy is reported%s",
                   f"; validation accuracy {validation['accuracy']:.3f} (the images that chose the head "
                   "and stopped training, not a test)" if validation else "")
    return {"images": 0, "accuracy": None, "class_names": list(splits.class_names), "validation": validation}


def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of every weight: equal on every worker of a correct multi-worker run."""
    return _fingerprint(model.get_weights())[:16]
