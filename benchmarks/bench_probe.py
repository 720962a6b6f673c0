"""Does the probe pick the cut that training would? On bench_quality's four datasets.

For every cut of VGG16 (``hed`` weights; removed 0..12 units), on the same seeded splits as
``bench_quality.py``:

- the probe's scores on the training images (``keras-transfer probe``: 5-fold linear-probe
  accuracy, LogME), and the cut each recommends;
- the trained accuracy there: the default recipe's head stage alone (linear head started at the
  linear probe, 5 epochs; the backbone frozen), tested on the test split (validation beside it).

Prints per dataset the probe's pick, LogME's pick, the best cut by trained test accuracy, the gap
in points between the best and the probe's pick, and Kendall's tau of each score against the
trained accuracy over the cuts; writes ``benchmarks/results/probe_validation.json``.

    python benchmarks/bench_probe.py [--datasets elpv digits] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_quality import DATASETS, load  # noqa: E402 - the same datasets, sizes and splits

from keras_transfer import data, training  # noqa: E402
from keras_transfer.models.backbones import build_base  # noqa: E402
from keras_transfer.training import cut_probe, recipes

HERE = os.path.dirname(os.path.abspath(__file__))


def trained_accuracy(splits, size: int, removed: int, epochs: int, cache) -> dict:
    model = training.build_model("vgg16", splits.num_classes, weights="hed", input_size=size, removed=removed)
    recipe = recipes.recipe(head_epochs=epochs, fine_tune_epochs=0, seed=0, verbose=0)
    history = training.fine_tune(model, splits, recipe, cache=cache)["head"]
    return {"test": training.evaluate(model, splits.test)["accuracy"], "val": float(history["val_accuracy"][-1])}


def bench(name: str, epochs: int, workdir: str) -> dict:
    from scipy.stats import kendalltau

    spec = DATASETS[name]
    images = load(name, spec["size"], spec["limit"], 0, workdir)
    splits = data.split(images, validation_split=0.2, test_split=0.2, seed=0)
    start = time.perf_counter()
    base = build_base("vgg16", weights="hed", input_shape=(spec["size"], spec["size"], 3))
    result = cut_probe.probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names)
    probe_seconds = time.perf_counter() - start
    cache = training.FeatureCache()
    rows = []
    for cut in reversed(result["cuts"]):  # shallowest first: each deeper cut's features extend it
        trained = trained_accuracy(splits, spec["size"], cut["removed"], epochs, cache)
        rows.append({**cut, "trained_test": trained["test"], "trained_val": trained["val"]})
        print(f"  {name:<14} removed {cut['removed']:>2} ({cut['layer']:<13}) probe {cut['probe_accuracy']:.3f}  "
              f"LogME {cut['logme']:+.4f}  trained: val {trained['val']:.3f}, test {trained['test']:.3f}", flush=True)
    rows.sort(key=lambda r: r["removed"])
    by_removed = {r["removed"]: r for r in rows}
    best = max(rows, key=lambda r: (r["trained_test"], r["trained_val"], r["removed"]))
    pick, logme_pick = result["recommended_removed"], result["logme_recommended_removed"]
    trained = [r["trained_test"] for r in rows]
    return {
        "dataset": name, "size": spec["size"], "train_images": len(splits.train), "test_images": len(splits.test),
        "probe_pick": pick, "logme_pick": logme_pick, "best_trained": best["removed"],
        "best_trained_test": best["trained_test"], "probe_pick_test": by_removed[pick]["trained_test"],
        "logme_pick_test": by_removed[logme_pick]["trained_test"],
        "gap_points": round(100 * (best["trained_test"] - by_removed[pick]["trained_test"]), 1),
        "logme_gap_points": round(100 * (best["trained_test"] - by_removed[logme_pick]["trained_test"]), 1),
        "tau_probe": float(kendalltau([r["probe_accuracy"] for r in rows], trained).statistic),
        "tau_logme": float(kendalltau([r["logme"] for r in rows], trained).statistic),
        "probe_seconds": round(probe_seconds, 1), "cuts": rows,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--epochs", type=int, default=5, help="head-stage epochs per cut (default: %(default)s)")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.datasets:
            results.append(bench(name, args.epochs, workdir))
    print(f"\n{'dataset':<14} {'probe pick':>10} {'LogME pick':>10} {'best trained':>12} {'test at pick':>12} "
          f"{'best test':>9} {'gap (pts)':>9} {'LogME gap':>9} {'tau probe':>9} {'tau LogME':>9}")
    for r in results:
        print(f"{r['dataset']:<14} {r['probe_pick']:>10} {r['logme_pick']:>10} {r['best_trained']:>12} "
              f"{r['probe_pick_test']:>12.3f} {r['best_trained_test']:>9.3f} {r['gap_points']:>9.1f} "
              f"{r['logme_gap_points']:>9.1f} {r['tau_probe']:>+9.2f} {r['tau_logme']:>+9.2f}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "probe_validation.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
