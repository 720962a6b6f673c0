"""Shermin et al. 2019 (seed 003): transfer *with* the source network's classifier kept.

A source network is transferred two ways, at each frozen depth (the first n units frozen, the
rest fine-tuned): **dropped** (the usual way: the source
classifier is replaced by a new softmax) and **kept** (the source softmax stays and new layers
go on top of it, normalised as :func:`keras_transfer.models.heads.on_classifier` does:
log -> LayerNormalization -> Dense -> softmax). Accuracy on the target's test images against n.

Two sources: by default (``backbone=None``) the small conv net trained here on classes A,
transferred to classes B; with ``backbone`` (e.g. ``"vgg16"``, ``weights="imagenet"``) that
pretrained network with its ImageNet classifier, transferred to all the data's classes with the
package's default recipe, at the backbone's ImageNet input size (the classifier needs it).
"""

from __future__ import annotations

import dataclasses
import os

import keras

from keras_transfer import data, plots
from keras_transfer.experiments import classsplits, smallnet
from keras_transfer.experiments.results import Results, spread
from keras_transfer.learner import Learner
from keras_transfer.models import heads
from keras_transfer.models.backbones import build_base, get_backbone
from keras_transfer.models.surgery import ThroughUnit, units
from keras_transfer.training import precision, recipes

HEADS = ("dropped", "kept")


@dataclasses.dataclass
class KeepClassifierConfig:
    data_dir: str | None = None
    dataset: str | None = "fashion_mnist"
    a_classes: tuple | None = None
    input_size: int | None = None  # None: 28 for the small net, the backbone's ImageNet size
    limit_per_class: int | None = 500
    seeds: tuple = (0, 1, 2)
    frozen: tuple = (0, 1, 2, 3, 4, 5)
    epochs: int = 8
    width: int = 16
    head_width: int = 64
    backbone: str | None = None  # a pretrained source (with weights) instead of the net trained on A
    weights: str | None = "imagenet"
    precision: str = "auto"
    in_memory: str = "auto"


def _target(config, source: keras.Model, part, head: str, frozen: int, seed: int) -> keras.Model:
    shape = part.train.images.shape[1:]
    if head == "dropped":
        model = smallnet.build(shape, part.num_classes, seed + 1000, config.width)
        smallnet.transfer(source, model, len(smallnet.UNITS), freeze=False)
        return smallnet.freeze_units(model, frozen)
    body = smallnet.build(shape, source.output.shape[-1], seed, config.width)
    body.set_weights(source.get_weights())
    smallnet.freeze_units(body, frozen)
    inputs = keras.Input(shape=shape, name="images")
    outputs = heads.on_classifier(body(inputs), part.num_classes, config.head_width, 0.0, from_softmax=True)
    return keras.Model(inputs, outputs, name="small_convnet_keep_classifier")


def _cell(config, source, part, head, frozen, seed) -> float:
    model = smallnet.fit(_target(config, source, part, head, frozen, seed), part.train, part.val, config.epochs, seed)
    return smallnet.accuracy(model, part.test.images, part.test.labels)


def summarise(cells: dict) -> dict:
    """``{head: {frozen: {mean, std, seeds}}}`` and the paired difference kept - dropped."""
    groups: dict = {}
    for key, value in cells.items():
        seed, head, frozen = key.split("/")
        groups.setdefault(head, {}).setdefault(frozen, {})[seed] = value
    out = {h: {f: spread(list(v.values())) for f, v in fs.items()} for h, fs in groups.items()}
    if set(HEADS) <= set(groups):
        out["kept_minus_dropped"] = {f: spread([groups["kept"][f][s] - v for s, v in d.items() if s in groups["kept"].get(f, {})])
                                     for f, d in groups["dropped"].items()}
    return out


def _pretrained_cell(config, splits, head: str, frozen: int, seed: int) -> float:
    kept = head == "kept"
    recipe = recipes.recipe(head_epochs=config.epochs, fine_tune_epochs=config.epochs, seed=seed, verbose=0,
                            frozen=ThroughUnit(frozen),  # resolved (and range-checked) by surgery.resolve_frozen
                            width=config.head_width if kept else 0, dropout=0.0 if kept else 0.2)
    learner = Learner(splits, config.backbone, config.weights, 0, head="keep_classifier" if kept else "gap_dense",
                      include_top=kept, recipe=recipe, precision=None)
    learner.fine_tune()
    return learner.evaluate()["accuracy"]


def _unit_names(backbone: str) -> list[str]:
    """The backbone's units, from a random-init copy at its smallest input (no weights loaded)."""
    row = get_backbone(backbone)
    return units(build_base(backbone, weights=None, input_shape=(row.min_size, row.min_size, 3)))


def _input_size(config) -> int:
    if not config.backbone:
        return config.input_size or 28
    size = get_backbone(config.backbone).default_size
    if config.input_size not in (None, size):
        raise ValueError(f"a kept ImageNet classifier needs {config.backbone}'s input size {size}. "
                         f"Received: input_size={config.input_size}")
    return size


def _run_seed(config, results, pool, seed) -> None:
    if config.backbone:
        splits = data.split(pool, 0.1, 0.2, seed)
        for frozen in config.frozen:
            for head in HEADS:
                results.cell(f"{seed}/{head}/{frozen}", lambda: _pretrained_cell(config, splits, head, frozen, seed))
        return
    ab = classsplits.ab_splits(pool, config.a_classes, seed)
    source = results.source(f"{seed}-baseA", lambda: smallnet.fit(
        smallnet.build(ab.a.train.images.shape[1:], ab.a.num_classes, seed, config.width),
        ab.a.train, ab.a.val, config.epochs, seed))
    for frozen in config.frozen:
        for head in HEADS:
            results.cell(f"{seed}/{head}/{frozen}", lambda: _cell(config, source, ab.b, head, frozen, seed))


def _check(config: KeepClassifierConfig) -> None:
    """Refuse settings the chosen source would silently ignore."""
    default = KeepClassifierConfig()
    if config.backbone:
        unused = [f for f in ("a_classes", "width") if getattr(config, f) != getattr(default, f)]
        if unused:
            raise ValueError(f"{', '.join(unused)} apply to the small net trained on classes A, not to a pretrained "
                             f"backbone source. Received: backbone={config.backbone!r}, "
                             + ", ".join(f"{f}={getattr(config, f)!r}" for f in unused))
    elif config.weights != default.weights:
        raise ValueError(f"weights apply to a pretrained backbone source; give backbone too (e.g. 'vgg16'). "
                         f"Received: weights={config.weights!r}")


def run(config: KeepClassifierConfig, out_dir: str) -> dict:
    """Run (or resume) the experiment in ``out_dir``; returns ``results.json``'s content."""
    _check(config)
    results = Results(out_dir, "keep-classifier", config, len(config.seeds) * len(config.frozen) * len(HEADS))
    pool = classsplits.load_pool(config.data_dir, config.dataset, _input_size(config), config.limit_per_class,
                                 in_memory=config.in_memory)
    with precision.using(config.precision, backbone=config.backbone):
        for seed in config.seeds:
            _run_seed(config, results, pool, seed)
    unit_names = _unit_names(config.backbone) if config.backbone else list(smallnet.UNITS)
    result = results.save(accuracy=summarise(results.cells), units=unit_names[: max(config.frozen)])
    plots.keep_classifier_results(result, os.path.join(out_dir, "keep_classifier.png"))
    return result


def format_summary(result: dict) -> str:
    acc = result["accuracy"]
    lines = [f"{'frozen':>6}  {'dropped':>13}  {'kept':>13}  {'kept - dropped':>15}"]
    for f in result["config"]["frozen"]:
        row = [acc.get(k, {}).get(str(f)) for k in (*HEADS, "kept_minus_dropped")]
        cells = [f"{r['mean']:{'+' if i == 2 else ''}.3f} ± {r['std']:.3f}" if r else "-" for i, r in enumerate(row)]
        lines.append(f"{f:>6}  {cells[0]:>13}  {cells[1]:>13}  {cells[2]:>15}")
    return "\n".join(lines)
