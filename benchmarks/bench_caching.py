"""Frozen-prefix feature caching vs training end to end, side by side in one run.

VGG16 with weights="hed" on ELPV (binary), frozen through block4_pool: the same recipe is run
on the plain path and on the cached path from the same seed. Seconds per epoch include the
one-off feature computation of the cached path, spread over its epochs.

    python benchmarks/bench_caching.py [--size 96] [--per-class 200] [--epochs 3]
"""
import argparse
import time

import keras
import numpy as np

from keras_transfer import data, training


def run(splits, size, epochs, cache_features, seed):
    keras.utils.set_random_seed(seed)
    model = training.build_model("vgg16", splits.num_classes, weights="hed", input_size=size, width=256)
    recipe = training.Recipe(head_epochs=epochs, fine_tune_epochs=epochs, frozen="block4_pool",
                             cache_features=cache_features, patience=None, seed=seed, verbose=0)
    start = time.perf_counter()
    training.fine_tune(model, splits, recipe, cache=training.FeatureCache())
    seconds = time.perf_counter() - start
    return seconds / (2 * epochs), training.evaluate(model, splits.test)["accuracy"], model


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per stage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    splits = data.load(dataset="elpv", image_size=args.size, limit=args.per_class, seed=args.seed, progress=False)
    print(f"ELPV binary, {len(splits.train)} train / {len(splits.test)} test images at {args.size}x{args.size}; "
          f"VGG16 hed, frozen through block4_pool, {args.epochs}+{args.epochs} epochs")
    plain_s, plain_acc, plain_model = run(splits, args.size, args.epochs, False, args.seed)
    cached_s, cached_acc, cached_model = run(splits, args.size, args.epochs, True, args.seed)
    x = splits.test.images[:16].astype("float32")
    diff = np.abs(plain_model.predict(x, verbose=0) - cached_model.predict(x, verbose=0)).max()
    print(f"{'path':<8} {'s/epoch':>8} {'test acc':>9}")
    print(f"{'plain':<8} {plain_s:>8.2f} {plain_acc:>9.3f}")
    print(f"{'cached':<8} {cached_s:>8.2f} {cached_acc:>9.3f}")
    print(f"speed-up {plain_s / cached_s:.1f}x; max |p_plain - p_cached| on 16 test images {diff:.2e}")


if __name__ == "__main__":
    main()
