"""Linear probes on pooled backbone features: how well a linear classifier does on them.

:func:`fit_linear` is the standardised logistic regression that is both the quality floor of
``benchmarks/bench_quality.py`` and the default recipe's head initialisation (LP-FT: Kumar et
al. 2022, "Fine-Tuning can Distort Pretrained Features"): the head starts where a converged
linear probe ends, so fine-tuning starts from the floor instead of from a few noisy steps.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

logger = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0)


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
               y_val: np.ndarray | None = None, grid=C_GRID, seed: int = 0) -> LinearProbe:
    """Multinomial logistic regression on already-standardised features, C chosen by val log-loss.

    Without validation images the middle of the grid (C=0.1... 1) is used as is.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    has_val = x_val is not None and len(x_val) > 0
    candidates = grid if has_val else (1.0,)
    best = None
    for c in candidates:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        if not has_val:
            best = (0.0, clf, None)
            break
        proba = np.zeros((len(x_val), num_classes))
        proba[:, clf.classes_] = clf.predict_proba(x_val)
        proba = np.clip(proba, 1e-7, 1)
        score = log_loss(y_val, proba / proba.sum(axis=1, keepdims=True), labels=list(range(num_classes)))
        acc = float(np.mean(proba.argmax(1) == y_val))
        if best is None or score < best[0]:
            best = (score, clf, acc)
    _, clf, val_accuracy = best
    kernel, bias = _as_softmax(clf, num_classes)
    logger.info("linear probe: C=%g, val accuracy %s", clf.C, "n/a" if val_accuracy is None else f"{val_accuracy:.3f}")
    return LinearProbe(kernel, bias, float(clf.C), val_accuracy)
