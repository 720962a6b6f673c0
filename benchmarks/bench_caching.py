"""Frozen-prefix feature caching and bfloat16 vs the naive float32 fit, side by side in one run.

VGG16 with weights="hed" on ELPV (binary), frozen through block4_pool: the same recipe is run
on the plain float32 path, on the cached path, and on the cached path in bfloat16 (CPUs with
bf16 instructions), from the same seed. Seconds per epoch are given two ways for the cached
paths: with the one-off feature computation spread over the run's epochs (a single run), and
with the features already in the cache (the steady state: every further epoch, a search's
later trials, a rerun).

Each path is run ``--repeats`` times (the naive path's seconds vary by ~15% from run to run
on this machine) and its median is reported; the accuracy is the first run's.

    python benchmarks/bench_caching.py [--size 96] [--per-class 200] [--epochs 3] [--repeats 2]
"""
import argparse
import time

import keras
import numpy as np

from keras_transfer import data, training
from keras_transfer.training import precision


def run(splits, size, epochs, cache_features, seed, dtype="float32", cache=None):
    keras.utils.set_random_seed(seed)
    with precision.using(dtype):
        model = training.build_model("vgg16", splits.num_classes, weights="hed", input_size=size, width=256)
        recipe = training.Recipe(head_epochs=epochs, fine_tune_epochs=epochs, frozen="block4_pool",
                                 cache_features=cache_features, patience=None, seed=seed, verbose=0)
        start = time.perf_counter()
        training.fine_tune(model, splits, recipe, cache=cache if cache is not None else training.FeatureCache())
        seconds = time.perf_counter() - start
        return seconds / (2 * epochs), training.evaluate(model, splits.test)["accuracy"], model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="runs per path; the median is reported")
    args = parser.parse_args()

    splits = data.load(dataset="elpv", image_size=args.size, limit=args.per_class, seed=args.seed, progress=False)
    print(f"ELPV binary, {len(splits.train)} train / {len(splits.test)} test images at {args.size}x{args.size}; "
          f"VGG16 hed, frozen through block4_pool, {args.epochs}+{args.epochs} epochs")
    def median_of(runs):
        return float(np.median([r[0] for r in runs])), runs[0][1], runs[0][2]

    plain_s, plain_acc, plain_model = median_of([run(splits, args.size, args.epochs, False, args.seed)
                                                 for _ in range(args.repeats)])
    rows = [("plain float32 (naive)", plain_s, plain_acc)]
    for dtype in ("float32", "bfloat16"):
        first, again = [], []
        for _ in range(args.repeats):
            cache = training.FeatureCache()  # empty: the run computes its features
            first.append(run(splits, args.size, args.epochs, True, args.seed, dtype, cache))
            cache.heads = training.HeadMemo()  # features cached, but every epoch must really run
            again.append(run(splits, args.size, args.epochs, True, args.seed, dtype, cache))
        first_s, acc, model = median_of(first)
        rows += [(f"cached {dtype}, one run", first_s, acc), (f"cached {dtype}, steady", median_of(again)[0], acc)]
        if dtype == "float32":
            cached_model = model
    x = splits.test.images[:16].astype("float32")
    diff = np.abs(plain_model.predict(x, verbose=0) - cached_model.predict(x, verbose=0)).max()
    print(f"{'path (median of ' + str(args.repeats) + ')':<26} {'s/epoch':>8} {'speed-up':>9} {'test acc':>9}")
    for name, s, acc in rows:
        print(f"{name:<26} {s:>8.2f} {plain_s / s:>8.1f}x {acc:>9.3f}")
    print(f"max |p_plain - p_cached| (float32) on 16 test images {diff:.2e}")


if __name__ == "__main__":
    main()
