"""Yosinski et al. 2014 (seed 001): how transferable are the features of each layer?

Split the classes into A and B; train a base network on each. For n = 1..L (the small net's
units), copy the first n units of base B (BnB, a "selfer") or of base A (AnB, a transfer) into
a new network for B, frozen or fine-tuned (+), re-initialise the rest, train on B, and report
accuracy on B's test images against n: the paper's Figure 2, on the user's data.
"""

from __future__ import annotations

import dataclasses
import os

from keras_transfer import plots
from keras_transfer.experiments import classsplits, smallnet
from keras_transfer.experiments.results import Results, spread
from keras_transfer.training import precision

CONDITIONS = ("BnB", "BnB+", "AnB", "AnB+")


@dataclasses.dataclass
class TransferabilityConfig:
    data_dir: str | None = None
    dataset: str | None = "fashion_mnist"
    a_classes: tuple | None = None
    input_size: int = 28
    limit_per_class: int | None = 500
    seeds: tuple = (0, 1, 2)
    epochs: int = 8
    width: int = 16
    precision: str = "auto"
    in_memory: str = "auto"


def _train_base(config, part, seed):
    model = smallnet.build(part.train.images.shape[1:], part.num_classes, seed, config.width)
    return smallnet.fit(model, part.train, part.val, config.epochs, seed)


def _transfer_cell(config, source, target_part, n, freeze, seed) -> float:
    model = smallnet.build(target_part.train.images.shape[1:], target_part.num_classes, seed + 1000, config.width)
    smallnet.transfer(source, model, n, freeze)
    smallnet.fit(model, target_part.train, target_part.val, config.epochs, seed)
    return smallnet.accuracy(model, target_part.test.images, target_part.test.labels)


def _run_split(config, results, pool, split_name, a_classes, seed):
    ab = classsplits.ab_splits(pool, a_classes, seed)
    base = {part: results.source(f"{split_name}-{seed}-base{part}", lambda p=part: _train_base(config, getattr(ab, p.lower()), seed))
            for part in ("A", "B")}
    results.cell(f"{split_name}/{seed}/baseB/0",
                 lambda: smallnet.accuracy(base["B"], ab.b.test.images, ab.b.test.labels))
    for n in range(1, len(smallnet.UNITS) + 1):
        for condition in CONDITIONS:
            source, freeze = base[condition[0]], not condition.endswith("+")
            results.cell(f"{split_name}/{seed}/{condition}/{n}",
                         lambda: _transfer_cell(config, source, ab.b, n, freeze, seed))


def summarise(cells: dict, against_base: bool = False) -> dict:
    """``{split: {condition: {n: {mean, std, seeds}}}}`` from ``"split/seed/condition/n"`` cells;
    with ``against_base``, of each cell minus baseB of the same split and seed (paired)."""
    groups: dict = {}
    for key, value in cells.items():
        split, seed, condition, n = key.split("/")
        base = cells.get(f"{split}/{seed}/baseB/0")
        if against_base and (condition == "baseB" or base is None):
            continue
        groups.setdefault(split, {}).setdefault(condition, {}).setdefault(n, []).append(value - (base if against_base else 0))
    return {s: {c: {n: spread(v) for n, v in ns.items()} for c, ns in conds.items()} for s, conds in groups.items()}


def run(config: TransferabilityConfig, out_dir: str) -> dict:
    """Run (or resume) the experiment in ``out_dir``; returns ``results.json``'s content."""
    splits = classsplits.named_splits(config.dataset if not config.data_dir else None, config.a_classes)
    total = len(splits) * len(config.seeds) * (1 + len(CONDITIONS) * len(smallnet.UNITS))
    results = Results(out_dir, "transferability", config, total)
    pool = classsplits.load_pool(config.data_dir, config.dataset, config.input_size, config.limit_per_class,
                                 in_memory=config.in_memory)
    with precision.using(config.precision):
        for split_name, a_classes in splits.items():
            for seed in config.seeds:
                _run_split(config, results, pool, split_name, a_classes, seed)
    result = results.save(splits={k: list(v) if v else None for k, v in splits.items()},
                          accuracy=summarise(results.cells), minus_base_b=summarise(results.cells, True),
                          units=list(smallnet.UNITS))
    plots.transferability(result, os.path.join(out_dir, "transferability.png"))
    return result


def format_summary(result: dict) -> str:
    lines = []
    for split, conds in result["accuracy"].items():
        base = conds["baseB"]["0"]
        lines.append(f"{split} split (baseB {base['mean']:.3f} ± {base['std']:.3f}):")
        lines.append(f"{'n':>3}  " + "  ".join(f"{c:>13}" for c in CONDITIONS))
        for n in range(1, len(result["units"]) + 1):
            row = [conds.get(c, {}).get(str(n)) for c in CONDITIONS]
            lines.append(f"{n:>3}  " + "  ".join(f"{r['mean']:.3f} ± {r['std']:.3f}" if r else f"{'-':>13}" for r in row))
        lines.append("     minus baseB of the same seed (paired):")
        for n in range(1, len(result["units"]) + 1):
            row = [result["minus_base_b"][split].get(c, {}).get(str(n)) for c in CONDITIONS]
            lines.append(f"{n:>3}  " + "  ".join(f"{r['mean']:+.3f} ± {r['std']:.3f}" if r else f"{'-':>14}" for r in row))
    return "\n".join(lines)
