"""Linear probes: a standardised logistic regression on features, as a softmax layer.

:func:`fit_linear` is both the quality floor (``benchmarks/bench_quality.py``, ``tune``'s floor)
and the default recipe's head initialisation (LP-FT: Kumar et al. 2022, "Fine-Tuning can
Distort Pretrained Features"): the head starts where a converged linear probe ends, so
fine-tuning starts from the floor instead of from a few noisy steps. A ground-floor module:
it imports nothing of the package, so the probe and training can both use it.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0)


@dataclasses.dataclass
class LinearProbe:
    """``softmax(x @ kernel + bias)`` on standardised features; ``C`` the inverse L2 strength chosen."""

    kernel: np.ndarray  # (d, K)
    bias: np.ndarray  # (K,)
    C: float
    val_accuracy: float | None


def _as_softmax(clf, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's coefficients as a K-way softmax layer (binary: logits [0, w.x + b])."""
    coef, intercept = clf.coef_, clf.intercept_
    kernel = np.zeros((coef.shape[1], num_classes), "float32")
    bias = np.zeros(num_classes, "float32")
    classes = list(clf.classes_)
    if coef.shape[0] == 1:  # binary: one row for classes_[1]
        kernel[:, classes[1]], bias[classes[1]] = coef[0], intercept[0]
    else:
        for row, c in enumerate(classes):
            kernel[:, c], bias[c] = coef[row], intercept[row]
    return kernel, bias


def fit_linear(x_train: np.ndarray, y_train: np.ndarray, num_classes: int, x_val: np.ndarray | None = None,
               y_val: np.ndarray | None = None, grid=C_GRID, seed: int = 0, groups: np.ndarray | None = None,
               folds: int = 3) -> LinearProbe:
    """Multinomial logistic regression on already-standardised features, C chosen by validation
    accuracy (ties: the stronger regularisation, the first in ``grid``): the floor's own rule, so
    a head started here starts exactly at the floor.

    Without validation images (a run trained on all its labelled images), C is chosen by the same
    rule on stratified ``folds``-fold cross-validation of the training rows instead; ``groups``
    (e.g. the image each augmented view's row comes from) keeps a group's rows in one fold, so a
    view is never scored by a model fitted on another view of its own image."""
    has_val = x_val is not None and len(x_val) > 0
    cv = None
    if not has_val and len(grid) > 1:
        folds = min(folds, int(np.bincount(np.asarray(y_train)).min()))
        if folds >= 2:
            cv = (StratifiedGroupKFold(folds, shuffle=True, random_state=seed) if groups is not None
                  else StratifiedKFold(folds, shuffle=True, random_state=seed))
    best = None
    for c in grid if (has_val or cv is not None) else (1.0,):
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed)
        if cv is not None:
            acc = float(cross_val_score(clf, x_train, y_train, groups=groups, cv=cv).mean())
        else:
            clf.fit(x_train, y_train)
            acc = float(np.mean(clf.predict(x_val) == y_val)) if has_val else None
        if best is None or (acc is not None and acc > best[0]):
            best = (acc, c, clf)
    accuracy, c, clf = best
    if cv is not None:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        logger.info("linear probe: C=%g, %d-fold cross-validated accuracy on the training images %.3f (no "
                    "validation images)", c, cv.get_n_splits(), accuracy)
        accuracy = None  # not a validation accuracy
    else:
        logger.info("linear probe: C=%g, val accuracy %s", c, "n/a" if accuracy is None else f"{accuracy:.3f}")
    kernel, bias = _as_softmax(clf, num_classes)
    return LinearProbe(kernel, bias, float(c), accuracy)


def cv_linear_probe(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, C: float = 0.1) -> float:
    """Mean accuracy of a standardised logistic regression over stratified ``folds``."""
    folds = max(2, min(folds, int(np.bincount(labels).min())))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return float(cross_val_score(clf, features, labels, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean())


def floor(train: tuple, val: tuple, test: tuple | None = None, seed: int = 0) -> dict:
    """The quality floor every recipe and search must reach: :func:`fit_linear` on ``train =
    (features, labels)`` standardised with the training statistics, C chosen on ``val``;
    ``{"C", "val_accuracy", "test_accuracy"}`` (test: None without test data). Features computed
    in bfloat16 are taken in float32 (scikit-learn takes no bfloat16, and statistics need the bits)."""
    train, val, test = [None if p is None else (np.asarray(p[0], "float32"), p[1]) for p in (train, val, test)]
    mean, std = train[0].mean(0), train[0].std(0)
    std = np.where(std > 0, std, 1.0)  # as scikit-learn's StandardScaler
    num_classes = int(max(np.max(p[1]) for p in (train, val, test) if p is not None and len(p[1]))) + 1
    fitted = fit_linear((train[0] - mean) / std, train[1], num_classes, (val[0] - mean) / std, val[1], seed=seed)
    tested = None
    if test is not None and len(test[1]):
        tested = float(np.mean((((test[0] - mean) / std) @ fitted.kernel + fitted.bias).argmax(1) == test[1]))
    return {"C": fitted.C, "val_accuracy": fitted.val_accuracy, "test_accuracy": tested}


def majority(train_labels: np.ndarray, labels: np.ndarray) -> float | None:
    """Accuracy of always answering the training set's most common class (None: no labels)."""
    if not len(labels):
        return None
    return float(np.mean(np.asarray(labels) == np.bincount(np.asarray(train_labels)).argmax()))
