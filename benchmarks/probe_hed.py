"""Sanity figure for weights="hed": a logistic-regression probe on GAP features of VGG16's
block5_pool for ~800 ELPV images at 128x128, HED weights vs random init.

    python benchmarks/probe_hed.py [--images 800] [--size 128]

Prints 5-fold cross-validated probe accuracy for both, and the majority-class rate.
"""
import argparse
import time

import keras
import numpy as np

from keras_transfer import data
from keras_transfer.models.backbones import build_base
from keras_transfer.models.layers import Preprocess


def gap_features(weights, images, size):
    base = build_base("vgg16", weights=weights, input_shape=(size, size, 3))
    extractor = keras.Sequential([keras.Input((size, size, 3)), Preprocess("caffe"), base,
                                  keras.layers.GlobalAveragePooling2D()])
    return extractor.predict(images.astype("float32"), batch_size=32, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    full = data.elpv(args.size)
    pick = np.sort(np.random.default_rng(args.seed).permutation(len(full))[: args.images])
    sample = full.subset(pick)
    majority = np.bincount(sample.labels).max() / len(sample)
    print(f"ELPV binary: {len(sample)} images at {args.size}x{args.size}, majority class {majority:.3f}")
    for weights in ("hed", None):
        t = time.time()
        feats = gap_features(weights, sample.images, args.size)
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
        folds = StratifiedKFold(5, shuffle=True, random_state=args.seed)
        acc = cross_val_score(probe, feats, sample.labels, cv=folds)
        print(f"weights={str(weights):5}  probe accuracy {acc.mean():.3f} ± {acc.std():.3f}  ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
