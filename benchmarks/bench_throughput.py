"""Images/s and GFLOP/s of the frozen-prefix forward pass and of a training step, beside the
machine's matmul ceiling measured in the same run, in float32 and bfloat16.

    python benchmarks/bench_throughput.py                     # VGG16 + InceptionV3, 2 sizes, ~5 min
    python benchmarks/bench_throughput.py --backbones vgg16 --sizes 96

FLOPs are 2 x the multiply-adds of every kernel (``surgery.multiply_adds``); a training step is
counted as 3x the forward pass (forward, then gradients for inputs and weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from keras_transfer import training  # noqa: E402
from keras_transfer.models.surgery import multiply_adds  # noqa: E402
from keras_transfer.training import precision


def matmul_gflops(dtype: str, n: int = 2048, seconds: float = 3.0) -> float:
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        f(a).numpy()
        count += 1
    return 2 * n ** 3 * count / (time.perf_counter() - start) / 1e9


def timed(fn, seconds: float) -> float:
    """Calls per second of ``fn`` after one warm-up call."""
    fn()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 2:
        fn()
        count += 1
    return count / (time.perf_counter() - start)


def measure(backbone: str, size: int, dtype: str, batch: int, seconds: float) -> dict:
    import keras
    import tensorflow as tf

    with precision.using(dtype, gpu=False, flags={"avx512_bf16"}):
        model = training.build_model(backbone, 10, weights=None, input_size=size, width=0)
        base = model.get_layer(backbone)
        images = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3)).astype("float32")
        prefix = training.prefix_model(model)
        forward = tf.function(lambda x: prefix(x, training=False))
        x = tf.constant(images)
        fwd_rate = timed(lambda: forward(x).numpy(), seconds) * batch
        model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="sparse_categorical_crossentropy", jit_compile=False)
        y = np.zeros(batch, "int32")
        model.train_on_batch(images, y)
        step_rate = timed(lambda: model.train_on_batch(images, y), seconds) * batch
    flops = 2 * multiply_adds(base.layers)
    return {"backbone": backbone, "size": size, "dtype": dtype, "forward_img_s": fwd_rate,
            "forward_gflops": fwd_rate * flops / 1e9, "train_img_s": step_rate,
            "train_gflops": step_rate * 3 * flops / 1e9, "gflop_per_image": flops / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", nargs="+", default=["vgg16", "inception_v3"])
    p.add_argument("--sizes", nargs="+", type=int, default=[96, 160])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=6.0, help="time each measurement this long")
    p.add_argument("--out", help="default: results/throughput.json for the default backbones and sizes, else a "
                   "file named after them (a partial run does not replace the full table)")
    args = p.parse_args(argv)
    if args.out is None:
        default = args.backbones == p.get_default("backbones") and args.sizes == p.get_default("sizes")
        name = "throughput" if default else "_".join(["throughput", *args.backbones, *map(str, args.sizes)])
        args.out = os.path.join(HERE, "results", name + ".json")
    ceiling = {d: matmul_gflops(d) for d in args.dtypes}
    print("matmul 2048x2048: " + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in ceiling.items()), flush=True)
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            size = max(size, 75) if backbone == "inception_v3" else size
            for dtype in args.dtypes:
                r = measure(backbone, size, dtype, args.batch, args.seconds)
                r["forward_share_of_ceiling"] = r["forward_gflops"] / ceiling[dtype]
                rows.append(r)
                print(f"{backbone:<13}{size:>4}px {dtype:<9} forward {r['forward_img_s']:7.1f} img/s "
                      f"{r['forward_gflops']:6.0f} GFLOP/s ({100 * r['forward_share_of_ceiling']:3.0f}% of matmul)  "
                      f"train step {r['train_img_s']:6.1f} img/s {r['train_gflops']:6.0f} GFLOP/s", flush=True)
    print("\nbfloat16 / float32 speed-up:")
    for r in rows:
        if r["dtype"] == "bfloat16":
            ref = next(q for q in rows if q["dtype"] == "float32" and q["backbone"] == r["backbone"] and q["size"] == r["size"])
            print(f"  {r['backbone']:<13}{r['size']:>4}px  forward {r['forward_img_s'] / ref['forward_img_s']:.2f}x  "
                  f"train {r['train_img_s'] / ref['train_img_s']:.2f}x")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"matmul_gflops": ceiling, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
