"""Images streamed from their files (``--in-memory no``) against images held in memory, side by side.

On synthetic folders of 256 px JPEGs (two classes, textured, written once under --work):

1. the streaming pipeline's rate alone (decode + resize, images/s, one pass), the training
   step's rate alone (the same batches already in memory, repeated), and the wall time of one
   epoch of the default recipe's head stage: end to end (``--no-cache``) in memory and streamed,
   and on cached features, in RAM for images in memory and on disk for streamed files (the
   default for each), their first epoch (which computes the features) and the next. The share
   of an epoch spent waiting on input is ``1 - t(in memory) / t(streamed)``, end to end and cached;
2. peak resident memory of ``keras-transfer train`` (a child process per run) on --files
   (e.g. 2000 and 20000), streamed and in memory, with the --rss-backbone at --rss-size (so
   20k files train in minutes on 2 cores).

    python benchmarks/bench_input.py [--files 2000 20000] [--backbone efficientnet_lite0] [--size 224]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def write_folder(root: str, n: int, side: int = 256, seed: int = 0) -> str:
    """``root/{a,b}/*.jpg``: ``n`` textured JPEGs, half per class (class b brighter); kept for reruns."""
    from PIL import Image

    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        return root
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = i % 2
        folder = os.path.join(root, "ab"[label])
        os.makedirs(folder, exist_ok=True)
        base = rng.normal(100 + 40 * label, 40, (side // 8, side // 8, 3))
        pixels = np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 20, (side, side, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)
    open(done, "w").close()
    return root


def pipeline_rate(files, batch_size: int) -> float:
    from keras_transfer import data

    ds = data.to_dataset(files.images, files.labels, batch_size, shuffle=True)
    start = time.perf_counter()
    n = sum(len(y) for _, y in ds)
    return n / (time.perf_counter() - start)


def epoch_seconds(splits, backbone: str, size: int, batch_size: int, cache: bool,
                  disk_dir: str | None = None) -> tuple[float, float]:
    """Seconds of the default recipe's head stage (one epoch), and of a second epoch when cached
    (features of streamed files in a fresh ``disk_dir``)."""
    import shutil

    import keras

    from keras_transfer import training
    from keras_transfer.training import recipes
    from keras_transfer.training._disk_cache import DiskCache

    keras.utils.set_random_seed(0)
    model = training.build_model(backbone, splits.num_classes, weights="imagenet" if backbone == "efficientnet_lite0"
                                 else None, input_size=size, removed=0)
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=0, batch_size=batch_size, cache_features=cache,
                            verbose=0, linear_probe=False)
    if disk_dir:
        shutil.rmtree(disk_dir, ignore_errors=True)
    feature_cache = training.FeatureCache(disk=DiskCache(disk_dir) if disk_dir else False)
    start = time.perf_counter()
    training.fine_tune(model, splits, recipe, cache=feature_cache)
    first = time.perf_counter() - start
    if not cache:
        return first, float("nan")
    feature_cache.heads = training.HeadMemo()  # features cached, the epoch itself runs again
    start = time.perf_counter()
    training.fine_tune(model, splits, recipe, cache=feature_cache)
    return first, time.perf_counter() - start


def step_rate(splits, backbone: str, size: int, batch_size: int, steps: int = 20) -> float:
    """Images/s of the head stage's training step alone: one in-memory batch, repeated."""
    import keras
    import tensorflow as tf

    from keras_transfer import training
    from keras_transfer.models import heads
    from keras_transfer.models.surgery import freeze, resolve_frozen

    model = training.build_model(backbone, splits.num_classes, weights=None, input_size=size, removed=0)
    freeze(model, resolve_frozen(model, "all"))  # the head stage: the backbone frozen
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), **heads.compile_args(model, 0.1))
    x = splits.train.images[:batch_size].astype("float32")
    y = heads.targets(model, splits.train.labels[:batch_size])
    ds = tf.data.Dataset.from_tensors((x, y)).repeat(steps + 3)
    model.fit(ds.take(3), verbose=0, shuffle=False)  # trace
    start = time.perf_counter()
    model.fit(ds.take(steps), verbose=0, shuffle=False)
    return steps * batch_size / (time.perf_counter() - start)


RSS_CHILD = ("import resource, sys; from keras_transfer.cli.entry_point import main; code = main(sys.argv[1:]); "
             "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def peak_rss(folder: str, out: str, in_memory: str, backbone: str, size: int) -> tuple[float, float]:
    """(GiB, seconds) of one ``keras-transfer train`` run in a child process."""
    args = ["train", "--data", folder, "--in-memory", in_memory, "--backbone", backbone, "--weights", "none",
            "--input-size", str(size), "--removed", "0", "--epochs", "1", "--fine-tune-epochs", "0",
            "--val-split", "0.05", "--test-split", "0.05", "--out", out]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RSS_CHILD, *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"train failed ({done.returncode}): {done.stderr[-2000:]}")
    kb = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KB")))
    return kb / 2**20, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rss-backbone", default="mobilenet_v2")
    parser.add_argument("--rss-size", type=int, default=96)
    parser.add_argument("--work", default="/tmp/keras-transfer-bench-input")
    parser.add_argument("--skip-rss", action="store_true", help="only the rates and epoch times")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "input.json"))
    args = parser.parse_args()

    from keras_transfer import data

    folders = {n: write_folder(os.path.join(args.work, f"files{n}"), n) for n in args.files}
    os.environ.setdefault("KERAS_TRANSFER_CACHE_DIR", os.path.join(args.work, "features"))  # the train runs' too
    first = folders[min(args.files)]
    load = dict(image_size=args.size, validation_split=0.1, test_split=0.0, seed=0, progress=False)
    streamed, held = data.load(first, in_memory="no", **load), data.load(first, in_memory="yes", **load)
    print(f"{len(streamed.train)} training images of {min(args.files)} 256 px JPEGs at {args.size} px, "
          f"{args.backbone}, batch {args.batch_size}, {os.cpu_count()} cores")
    result = {"files": min(args.files), "size": args.size, "backbone": args.backbone,
              "pipeline_images_per_s": pipeline_rate(streamed.train, args.batch_size),
              "step_images_per_s": step_rate(held, args.backbone, args.size, args.batch_size)}
    epoch = dict(backbone=args.backbone, size=args.size, batch_size=args.batch_size)
    result["memory_end_to_end_s"] = epoch_seconds(held, cache=False, **epoch)[0]
    result["streamed_end_to_end_s"] = epoch_seconds(streamed, cache=False, **epoch)[0]
    result["memory_cached_first_s"], result["memory_cached_next_s"] = epoch_seconds(held, cache=True, **epoch)
    result["streamed_disk_cached_first_s"], result["streamed_disk_cached_next_s"] = epoch_seconds(
        streamed, cache=True, disk_dir=os.path.join(args.work, "features"), **epoch)
    result["waiting_end_to_end"] = max(0.0, 1 - result["memory_end_to_end_s"] / result["streamed_end_to_end_s"])
    result["waiting_cached"] = max(0.0, 1 - result["memory_cached_next_s"] / result["streamed_disk_cached_next_s"])
    print(f"pipeline alone {result['pipeline_images_per_s']:.0f} images/s; training step alone "
          f"{result['step_images_per_s']:.0f} images/s")
    print("one head-stage epoch (s)        in memory   streamed   waiting on input")
    print(f"  end to end (--no-cache)       {result['memory_end_to_end_s']:9.1f}  {result['streamed_end_to_end_s']:9.1f}"
          f"   {result['waiting_end_to_end']:.0%}")
    print(f"  cached, first epoch           {result['memory_cached_first_s']:9.1f}  "
          f"{result['streamed_disk_cached_first_s']:9.1f}   (RAM / disk; computes the features)")
    print(f"  cached, next epoch            {result['memory_cached_next_s']:9.1f}  "
          f"{result['streamed_disk_cached_next_s']:9.1f}   {result['waiting_cached']:.0%}")
    if args.skip_rss:
        args.files = []
    rss = []
    for n in args.files:
        for mode in ("no", "yes"):
            gib, seconds = peak_rss(folders[n], os.path.join(args.work, f"run{n}-{mode}-{time.time_ns()}"), mode,
                                    args.rss_backbone, args.rss_size)
            rss.append({"files": n, "in_memory": mode, "peak_rss_gib": gib, "seconds": seconds})
            print(f"train {args.rss_backbone} {args.rss_size} px on {n} files, --in-memory {mode}: peak RSS "
                  f"{gib:.2f} GiB, {seconds:.0f} s", flush=True)
    for mode in ("no", "yes") if rss else ():
        sizes = [r["peak_rss_gib"] for r in rss if r["in_memory"] == mode]
        print(f"--in-memory {mode}: peak RSS {max(args.files)} files / {min(args.files)} files = "
              f"{sizes[-1] / sizes[0]:.2f}x")
    result["rss"] = rss
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
