"""Zhi et al. 2017 (seed 000): how many upper layers should be removed for *this* data?

Test accuracy against units removed, with the rest of the backbone frozen (head only) and
fine-tuned (the default recipe's two stages), over several seeded splits; the probe's scores
on the same figure, and Kendall's tau between the probe's ranking of the cuts and the
fine-tuned one.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np
from scipy.stats import kendalltau

from keras_transfer import data, plots, training
from keras_transfer.experiments.results import Results, spread
from keras_transfer.learner import Learner
from keras_transfer.models.backbones import build_base
from keras_transfer.training import cut_probe, precision, recipes

logger = logging.getLogger(__name__)

MODES = ("frozen", "fine_tuned")


@dataclasses.dataclass
class LayerRemovalConfig:
    data_dir: str | None = None
    dataset: str | None = "elpv"
    backbone: str = "vgg16"
    weights: str | None = "hed"
    input_size: int = 128
    limit_per_class: int | None = 150
    removed: tuple = (0, 1, 2, 3, 4, 5, 6)
    seeds: tuple = (0, 1, 2)
    head_epochs: int = 5
    fine_tune_epochs: int = 5
    batch_size: int = 32
    precision: str = "auto"
    in_memory: str = "auto"  # streamed files: the probe scores a sample of PROBE_SAMPLE training images


PROBE_SAMPLE = 1000  # what `keras-transfer probe` samples by default


def _cell(config: LayerRemovalConfig, splits, removed: int, mode: str, seed: int, cache) -> float:
    recipe = recipes.recipe(head_epochs=config.head_epochs, batch_size=config.batch_size, seed=seed, verbose=0,
                            fine_tune_epochs=config.fine_tune_epochs if mode == "fine_tuned" else 0)
    learner = Learner(splits, config.backbone, config.weights, removed, recipe=recipe, precision=None, cache=cache)
    learner.fine_tune()
    return learner.evaluate()["accuracy"]


def _summary(cells: dict, probes: dict, config: LayerRemovalConfig) -> dict:
    table = {}
    for mode in MODES:
        for r in config.removed:
            values = [cells[k] for k in cells if k.endswith(f"/{r}/{mode}")]
            if values:
                table.setdefault(mode, {})[str(r)] = spread(values)
    probe_mean = {str(r): float(np.mean([p[str(r)] for p in probes.values() if str(r) in p])) for r in config.removed
                  if any(str(r) in p for p in probes.values())}
    tau = {}
    for mode, rows in table.items():
        common = [r for r in rows if r in probe_mean]
        if len(common) >= 3:
            t, p = kendalltau([probe_mean[r] for r in common], [rows[r]["mean"] for r in common])
            tau[mode] = {"tau": float(t), "p_value": float(p), "cuts": len(common)}
    return {"accuracy": table, "probe_accuracy": probe_mean, "kendall_tau": tau}


def run(config: LayerRemovalConfig, out_dir: str) -> dict:
    """Run (or resume) the experiment in ``out_dir``; returns ``results.json``'s content."""
    results = Results(out_dir, "layer-removal", config, len(config.seeds) * len(config.removed) * len(MODES))
    probes = results.extra.setdefault("probe", {})
    with precision.using(config.precision, backbone=config.backbone):
        for seed in config.seeds:
            splits = data.load(config.data_dir, config.dataset, config.input_size, 0.2, 0.2, seed,
                               config.limit_per_class, progress=False, in_memory=config.in_memory)
            if str(seed) not in probes:
                base = build_base(config.backbone, weights=config.weights,
                                  input_shape=(config.input_size, config.input_size, 3))
                probed = splits.for_statistics(PROBE_SAMPLE, seed).train  # files: a sample of them
                scores = cut_probe.score_cuts(base, probed.images[:], probed.labels, config.batch_size, seed)
                probes[str(seed)] = {str(s.removed): s.probe_accuracy for s in scores if s.removed in config.removed}
                results.save()
            cache = training.FeatureCache()
            for removed in config.removed:
                for mode in MODES:
                    results.cell(f"{seed}/{removed}/{mode}", lambda: _cell(config, splits, removed, mode, seed, cache))
    result = results.save(**_summary(results.cells, probes, config))
    plots.layer_removal(result, os.path.join(out_dir, "layer_removal.png"))
    return result


def format_summary(result: dict) -> str:
    acc = result["accuracy"]
    lines = [f"{'removed':>7}  {'frozen':>13}  {'fine-tuned':>13}  {'probe':>6}"]
    for r in result["config"]["removed"]:
        cols = []
        for mode in MODES:
            c = acc.get(mode, {}).get(str(r))
            cols.append(f"{c['mean']:.3f} ± {c['std']:.3f}" if c else f"{'-':>13}")
        lines.append(f"{r:>7}  {cols[0]:>13}  {cols[1]:>13}  {result['probe_accuracy'].get(str(r), float('nan')):>6.3f}")
    for mode, t in result["kendall_tau"].items():
        lines.append(f"Kendall tau (probe vs {mode}): {t['tau']:+.2f} (p = {t['p_value']:.2f}, {t['cuts']} cuts)")
    return "\n".join(lines)
