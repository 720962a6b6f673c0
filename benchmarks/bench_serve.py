"""Requests/s and latency of `keras-transfer serve` at 1, 8 and 32 concurrent clients, with and
without request batching, beside the model's own batch throughput, in one run.

    python benchmarks/bench_serve.py [--backbone efficientnet_lite0] [--size 224] [--requests 64]

Each client sends one JPEG (serve_bytes, {"b64": ...}) per request over loopback. Prints one
table; errors under load are counted (goal: none).
"""
import argparse
import base64
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import numpy as np  # noqa: E402
from helpers import free_port, wait_for_port  # noqa: E402
from PIL import Image  # noqa: E402


def _jpeg(rng, size):
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _export(backbone, size, folder):
    from keras_transfer import export, training

    weights = "imagenet" if backbone == "efficientnet_lite0" else None
    model = training.build_model(backbone, 3, weights=weights, input_size=size, removed=0, width=0)
    return export.export(model, os.path.join(folder, "bench", "export"), ["a", "b", "c"])


def _model_throughput(version, files, batch=32, rounds=3):
    import tensorflow as tf

    sig = tf.saved_model.load(version).signatures["serve_bytes"]
    sig(images=tf.constant(files[:batch]))
    start = time.perf_counter()
    for _ in range(rounds):
        sig(images=tf.constant(files[:batch]))
    return batch * rounds / (time.perf_counter() - start)


def _load(port, bodies, clients):
    def one(body):
        start = time.perf_counter()
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/bench:predict", data=body)
            with urllib.request.urlopen(req, timeout=300) as r:
                ok = r.status == 200 and "predictions" in json.loads(r.read())
        except Exception:  # noqa: BLE001 - counted as an error
            ok = False
        return time.perf_counter() - start, ok

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    lat = np.array([r[0] for r in results]) * 1000
    return len(bodies) / wall, np.percentile(lat, 50), np.percentile(lat, 99), sum(not r[1] for r in results)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    files = [_jpeg(rng, 256) for _ in range(32)]
    bodies = [json.dumps({"signature_name": "serve_bytes", "instances": [{"b64": base64.b64encode(files[i % 32]).decode()}]}).encode()
              for i in range(args.requests)]
    with tempfile.TemporaryDirectory() as folder:
        version = _export(args.backbone, args.size, folder)
        own = _model_throughput(version, files)
        print(f"{args.backbone} at {args.size} px, 256 px JPEGs; the model's own serve_bytes throughput, "
              f"batch 32: {own:.1f} images/s")
        print("| batching | clients | requests/s | p50 ms | p99 ms | errors |\n| --- | --- | --- | --- | --- | --- |")
        for batching in (False, True):
            port = free_port()
            cmd = [sys.executable, "-m", "keras_transfer", "serve", os.path.dirname(version), "--port", str(port),
                   "--model-name", "bench"] + (["--enable-batching"] if batching else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port, proc)
                _load(port, bodies[:4], 1)  # warm up (the first call traces)
                for clients in (1, 8, 32):
                    rps, p50, p99, errors = _load(port, bodies, clients)
                    print(f"| {'on' if batching else 'off'} | {clients} | {rps:.1f} | {p50:.0f} | {p99:.0f} | {errors} |",
                          flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)


if __name__ == "__main__":
    main()
