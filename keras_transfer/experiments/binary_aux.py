"""Borthakur & Einhorn (seed 004): does a binary auxiliary head on the source task help transfer?

For each seed, one random A/B class split and one initialisation, shared by a *pair* of source
networks trained on A: **baseline** (class loss only) and **binary** (loss ``(1 - B)·L(y) +
B·L(y_b)``, ``y_b`` a random fixed half/half partition of A's classes, B = 0.4). Each is
transferred to B with all of B's training images and with a few per class, and two ways:
**frozen** (the conv units kept fixed, fc5 and a new classifier trained) and **reduced_lr**
(everything trained, transferred units at ``lr_factor`` x the rate). Reported: accuracy on B
and the paired difference binary - baseline, with its spread over seeds.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from keras_transfer import data, plots
from keras_transfer.experiments import classsplits, smallnet
from keras_transfer.experiments.results import Results, spread
from keras_transfer.models import heads
from keras_transfer.training import precision

SOURCES = ("baseline", "binary")
MODES = ("frozen", "reduced_lr")


@dataclasses.dataclass
class BinaryAuxConfig:
    data_dir: str | None = None
    dataset: str | None = "fashion_mnist"
    input_size: int = 28
    limit_per_class: int | None = 500
    b_per_class: tuple = (0, 10)  # 0: all of B's training images
    seeds: tuple = (0, 1, 2, 3, 4)
    binary_weight: float = 0.4
    lr_factor: float = 0.1
    epochs: int = 8
    width: int = 16
    precision: str = "auto"
    in_memory: str = "auto"


def _source(config, part, seed, binary: bool):
    model = smallnet.build(part.train.images.shape[1:], part.num_classes, seed, config.width, binary=binary)
    return smallnet.fit(model, part.train, part.val, config.epochs, seed,
                        binary_weight=config.binary_weight if binary else 0.0,
                        mapping=heads.class_partition(part.num_classes, seed))


def _transfer(config, source, part, train, mode, seed) -> float:
    model = smallnet.build(train.images.shape[1:], part.num_classes, seed + 1000, config.width)
    units = len(smallnet.UNITS)
    smallnet.transfer(source, model, units, freeze=False)
    if mode == "frozen":
        smallnet.freeze_units(model, units - 1)
        scales = None
    else:
        scales = smallnet.lr_scales_for(model, units, config.lr_factor)
    smallnet.fit(model, train, part.val, config.epochs, seed, lr_scales=scales)
    return smallnet.accuracy(model, part.test.images, part.test.labels)


def _run_seed(config, results, pool, seed):
    ab = classsplits.ab_splits(pool, None, seed)
    sources = {name: results.source(f"{seed}-{name}", lambda b=(name == "binary"): _source(config, ab.a, seed, b))
               for name in SOURCES}
    for name, model in sources.items():
        results.cell(f"{seed}/A/all/{name}", lambda: smallnet.accuracy(model, ab.a.test.images, ab.a.test.labels))
    for per_class in config.b_per_class:
        train = data.limit_per_class(ab.b.train, per_class, seed) if per_class else ab.b.train
        for mode in MODES:
            for name, model in sources.items():
                results.cell(f"{seed}/{mode}/{per_class or 'all'}/{name}",
                             lambda: _transfer(config, model, ab.b, train, mode, seed))


def summarise(cells: dict) -> dict:
    """``{condition: {baseline, binary, difference: {mean, std, seeds}, binary_better: k}}``, paired by seed."""
    groups: dict = {}
    for key, value in cells.items():
        seed, mode, per_class, source = key.split("/")
        groups.setdefault(f"{mode}/{per_class}", {}).setdefault(source, {})[seed] = value
    out = {}
    for condition, by_source in groups.items():
        paired = sorted(set(by_source.get("baseline", {})) & set(by_source.get("binary", {})))
        diffs = [by_source["binary"][s] - by_source["baseline"][s] for s in paired]
        out[condition] = {**{s: spread(list(v.values())) for s, v in by_source.items()},
                          "difference": spread(diffs) if diffs else None, "differences": diffs,
                          "binary_better": int(np.sum(np.array(diffs) > 0))}
    return out


def run(config: BinaryAuxConfig, out_dir: str) -> dict:
    """Run (or resume) the experiment in ``out_dir``; returns ``results.json``'s content."""
    per_seed = len(SOURCES) * (1 + len(config.b_per_class) * len(MODES))
    results = Results(out_dir, "binary-aux", config, len(config.seeds) * per_seed)
    pool = classsplits.load_pool(config.data_dir, config.dataset, config.input_size, config.limit_per_class,
                                 in_memory=config.in_memory)
    with precision.using(config.precision):
        for seed in config.seeds:
            _run_seed(config, results, pool, seed)
    result = results.save(accuracy=summarise(results.cells))
    groups = {c.replace("/", "\n"): r["differences"] for c, r in result["accuracy"].items() if r["differences"]}
    plots.paired_differences(groups, os.path.join(out_dir, "binary_aux.png"),
                             f"binary auxiliary head (B = {config.binary_weight}) minus baseline, paired by seed",
                             "accuracy difference (binary - baseline)")
    return result


def format_summary(result: dict) -> str:
    lines = [f"{'condition':<18}  {'baseline':>13}  {'binary':>13}  {'binary - baseline':>17}  better"]
    for condition, r in result["accuracy"].items():
        cols = [f"{r[s]['mean']:.3f} ± {r[s]['std']:.3f}" if s in r else "-" for s in SOURCES]
        d = r["difference"]
        diff = f"{d['mean']:+.3f} ± {d['std']:.3f}" if d else "-"
        lines.append(f"{condition:<18}  {cols[0]:>13}  {cols[1]:>13}  {diff:>17}  {r['binary_better']}/{len(r['differences'])}")
    return "\n".join(lines)
