"""Where to cut a backbone: LogME and a linear probe of the pooled features at every cut.

The linear probe itself (:func:`~keras_transfer.training.linear_probe.fit_linear`) and batched inference live
below this module (``linear``, ``inference``), so training uses them without importing the probe.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np

from keras_transfer import plots
from keras_transfer._utils.atomic_files import write_json
from keras_transfer.data import take
from keras_transfer.models.backbones import backbone_for, build_base
from keras_transfer.models.layers import Preprocess
from keras_transfer.models.surgery import cut_index, max_removed
from keras_transfer.training import distribute, precision
from keras_transfer.training.batched_inference import batched_call
from keras_transfer.training.linear_probe import cv_linear_probe

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- LogME

def _evidence(s2: np.ndarray, z: np.ndarray, y_norm2: float, n: int, d: int, alpha: float, beta: float):
    """Log evidence / n of Bayesian linear regression ``y = F w + noise`` at prior precision
    ``alpha`` and noise precision ``beta``, from the SVD of F (``s2``: squared singular values,
    ``z = U^T y``). Returns (evidence, gamma, |m|^2, |F m - y|^2)."""
    shrink = beta * s2 / (alpha + beta * s2)
    m2 = float(np.sum(shrink ** 2 * z ** 2 / np.maximum(s2, 1e-300)))  # |m|^2, m = V diag(beta s/(alpha+beta s^2)) z
    residual = float(np.sum(((1 - shrink) * z) ** 2) + max(y_norm2 - float(np.sum(z ** 2)), 0.0))
    gamma = float(np.sum(shrink))
    log_det = float(np.sum(np.log(alpha + beta * s2))) + (d - len(s2)) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * residual - alpha / 2 * m2
                - log_det / 2 - n / 2 * np.log(2 * np.pi))
    return evidence / n, gamma, m2, residual


def logme_target(s2: np.ndarray, u: np.ndarray, y: np.ndarray, d: int, iterations: int = 100, tol: float = 1e-5):
    """Maximum log evidence / n for one target ``y`` (n,), by MacKay's fixed point
    (You et al. 2021, Algorithm 1); returns (evidence, alpha, beta)."""
    n = len(y)
    z = u.T @ y
    y_norm2 = float(y @ y)
    alpha, beta = 1.0, 1.0
    for _ in range(iterations):
        _, gamma, m2, residual = _evidence(s2, z, y_norm2, n, d, alpha, beta)
        # features without variance (identical images) fit nothing: gamma = m2 = 0, and alpha
        # must stay positive for the evidence (whose alpha terms then cancel) to be defined
        new_alpha = max(gamma / max(m2, 1e-12), 1e-12)
        new_beta = max((n - gamma) / max(residual, 1e-12), 1e-12)
        done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return _evidence(s2, z, y_norm2, n, d, alpha, beta)[0], alpha, beta


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME (You et al. 2021): the mean over classes of the maximum log evidence per image of a
    Bayesian linear model from ``features`` (n, D) to the class's one-hot column. Higher is better;
    comparable across layers of one network on one dataset. One SVD for all classes."""
    f = np.asarray(features, dtype=np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s2 = s ** 2
    keep = s2 > s2.max() * 1e-12 if len(s2) else s2 > 0
    u, s2 = u[:, keep], s2[keep]
    classes = np.unique(labels)
    return float(np.mean([logme_target(s2, u, (labels == c).astype(np.float64), f.shape[1])[0] for c in classes]))


# ---------------------------------------------------------------- where to cut

@dataclasses.dataclass
class CutScore:
    removed: int  # units removed to end here
    layer: str  # the layer the chopped model ends at
    logme: float
    probe_accuracy: float
    map_floats: int = 0  # h x w x C of the feature map there, what training computes (and may cache) an image


# Among cuts whose probe accuracies tie, one whose feature map is more than this many times the
# smallest tied one's is passed over: it costs memory and time for no measured gain (on easy
# images every cut ties, and LogME alone picked MobileNetV2's first block: 64x64x16 maps, 256 KB an image).
MAP_COST_RATIO = 2.0


def cut_candidates(base) -> list[tuple[int, str]]:
    """``(removed, end layer)`` for every number of units one can remove, 0 first."""
    return [(r, base.layers[cut_index(base, r)].name) for r in range(max_removed(base) + 1)]


def pooled_features_at(base, layer_names: list[str], images: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
    """GAP features of ``images`` (raw RGB) at each of ``layer_names``, in one forward pass."""
    inputs = keras.Input(tuple(base.input_shape[1:]), name="images")
    tapped = keras.Model(base.inputs, [base.get_layer(n).output for n in layer_names])
    outputs = tapped(Preprocess(backbone_for(base).preprocess_mode)(inputs))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    pooled = keras.Model(inputs, [keras.layers.GlobalAveragePooling2D()(o) if len(o.shape) == 4 else o for o in outputs])
    out = batched_call(pooled, images, batch_size)
    return [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]


def score_cuts(base, images: np.ndarray, labels: np.ndarray, batch_size: int = 32, seed: int = 0,
               strategy=None) -> list[CutScore]:
    """LogME and a 5-fold linear probe of the pooled features at every cut (0..n-1 units removed).
    Under a multi-worker ``strategy`` each worker computes the features of its share of the
    images (every W-th) and the workers gather them: each decodes 1/W of the files."""
    candidates = cut_candidates(base)
    names = [name for _, name in candidates]
    if strategy is None:
        features = pooled_features_at(base, names, images, batch_size)
    else:
        workers, index = distribute.input_share(strategy)
        mine = np.arange(index, len(labels), workers)
        where = distribute.all_gather_rows(strategy, mine)
        features = []
        for f in pooled_features_at(base, names, take(images, mine), batch_size):
            gathered = np.empty((len(labels), f.shape[1]), f.dtype)
            gathered[where] = distribute.all_gather_rows(strategy, f)
            features.append(gathered)
    rows = []
    for (removed, name), f in zip(candidates, features):
        standardised = (f - f.mean(0)) / np.maximum(f.std(0), 1e-6)
        floats = int(np.prod(base.get_layer(name).output.shape[1:]))
        rows.append(CutScore(removed, name, logme(standardised, labels), cv_linear_probe(f, labels, seed=seed), floats))
        logger.info("removed %2d (ends at %-14s) LogME %.4f  linear probe %.3f", removed, name,
                    rows[-1].logme, rows[-1].probe_accuracy)
    return rows


def recommend(rows: list[CutScore]) -> CutScore:
    """The cut with the best linear-probe accuracy; among ties, those whose maps are within
    :data:`MAP_COST_RATIO` of the smallest tied map, LogME breaking the tie, then fewer units removed."""
    best = max(round(r.probe_accuracy, 3) for r in rows)
    tied = [r for r in rows if round(r.probe_accuracy, 3) == best]
    cheapest = min(r.map_floats for r in tied)
    affordable = [r for r in tied if r.map_floats <= MAP_COST_RATIO * cheapest]
    return max(affordable, key=lambda r: (r.logme, -r.removed))


def follows(best: CutScore, by_logme: CutScore) -> str:
    """What the recommendation follows, and why, when LogME would cut elsewhere."""
    if best.removed == by_logme.removed:
        return "the linear probe and LogME agree"
    if round(best.probe_accuracy, 3) == round(by_logme.probe_accuracy, 3):
        return (f"LogME prefers removed {by_logme.removed} ({by_logme.layer}), which the linear probe ties with the "
                f"recommendation; its feature map is {by_logme.map_floats / max(best.map_floats, 1):.1f}x as large "
                f"({by_logme.map_floats:,} floats an image against {best.map_floats:,}): no measured gain for the cost")
    return (f"LogME prefers removed {by_logme.removed} ({by_logme.layer}); the recommendation follows the linear "
            f"probe: the default head is that linear classifier, so the probe's cross-validated accuracy is what the "
            f"head stage starts from, while LogME scores a regression to one-hot labels (benchmarks/bench_probe.py "
            f"compares both picks with trained accuracy)")


def probe_cuts(base, images: np.ndarray, labels: np.ndarray, class_names, out_dir: str | None = None,
               sample: int = 1000, seed: int = 0, batch_size: int = 32, strategy=None) -> dict:
    """Score every cut of ``base`` on (a stratified sample of at most ``sample``) images; with
    ``out_dir``, write ``probe.json`` and ``probe.png``. Returns the JSON's content. ``strategy``:
    see :func:`score_cuts`."""
    index = np.arange(len(labels))
    if len(index) > sample:
        rng = np.random.default_rng(seed)
        per_class = max(2, sample // len(class_names))
        index = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class]
                                        for c in range(len(class_names))]))
        logger.info("probing on a stratified sample of %d of the %d images", len(index), len(labels))
    rows = score_cuts(base, take(images, index), labels[index], batch_size, seed, strategy)  # files stay files
    best = recommend(rows)
    by_logme = max(rows, key=lambda r: (r.logme, -r.removed))
    result = {"backbone": base.name, "input_size": list(base.input_shape[1:3]), "images": int(len(index)),
              "sampled_from": int(len(labels)), "recommended_removed": best.removed, "recommended_layer": best.layer,
              "logme_recommended_removed": by_logme.removed, "follows": follows(best, by_logme),
              "cuts": [dataclasses.asdict(r) for r in rows]}
    if out_dir:
        write(result, out_dir)
    return result


def recommend_for(backbone: str, weights, splits, seed: int = 0, batch_size: int = 32, strategy=None,
                  sample: int = 1000) -> dict:
    """:func:`probe_cuts` on (a stratified sample of at most ``sample`` of) ``splits``' training
    images at their size: what ``probe``, ``train --removed auto`` and ``tune --removed-range
    auto`` all ask, so that they recommend the same cut for the same data and seed (every
    process of a distributed run computes the same from the same data; under a multi-worker
    ``strategy``, each from its share of it). It computes in float32 whatever precision the
    training runs in: bfloat16 features can tip the recommendation by one unit."""
    keras.utils.set_random_seed(seed)  # weights=None: the same random backbone in every process
    shared = strategy if strategy is not None and distribute.is_multi_worker(strategy) else None
    with precision.using("float32", log=False):  # the base and the pooling models built at each cut
        base = build_base(backbone, weights=weights, input_shape=(*splits.image_size, 3))
        return probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names, sample=sample,
                          seed=seed, batch_size=batch_size, strategy=shared)


def write(result: dict, out_dir: str) -> None:
    """``probe.json`` and ``probe.png`` (scores against units removed) in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "probe.json"), result)
    plot(result, os.path.join(out_dir, "probe.png"))


def plot(result: dict, path: str | None = None):
    """The probe's scores against units removed, the recommendation marked; a Figure."""
    return plots.probe_scores([CutScore(**c) for c in result["cuts"]], path, result["recommended_removed"],
                              title=f"{result['backbone']}: where to cut ({result['images']} images)")


def format_rows(result: dict) -> str:
    lines = [f"{'removed':>7}  {'ends at':<16} {'LogME':>9} {'probe acc':>9} {'map floats':>10}"]
    for r in result["cuts"]:
        mark = "  <- recommended" if r["removed"] == result["recommended_removed"] else ""
        lines.append(f"{r['removed']:>7}  {r['layer']:<16} {r['logme']:>9.4f} {r['probe_accuracy']:>9.3f} "
                     f"{r.get('map_floats', 0):>10,}{mark}")
    if result.get("follows"):
        lines.append(result["follows"])
    return "\n".join(lines)
