"""Does the default data path scale? Peak memory of `train` on 2,000 and 16,000 images, side by side.

Writes N easy synthetic JPEGs (3 classes, 140 px; every cut's linear probe ties on them) and runs
`keras-transfer train --data DIR --backbone mobilenet_v2 --weights none --input-size 128 --frozen all
--epochs 1 --fine-tune-epochs 0` with every other setting at its default, once per N and per
checkout, each in a fresh process; prints the peak RSS (the process and its children), the wall
time, what `--in-memory auto` chose, the cut, and the cached bytes an image. The ratio of peak RSS
from the smallest to the largest N is the figure to watch.

With ``--workers 2`` it runs the same command as a 2-worker cluster on loopback (TF_CONFIG) and
prints the share of the files' bytes each worker decoded.

    python benchmarks/bench_scale.py                                   # this checkout, 2,000 and 16,000
    python benchmarks/bench_scale.py --repos before=/work/baseline now=.   # two checkouts side by side
    python benchmarks/bench_scale.py --sizes 2000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
COMMAND = ["--backbone", "mobilenet_v2", "--weights", "none", "--input-size", "128", "--frozen", "all",
           "--epochs", "1", "--fine-tune-epochs", "0"]


def write_images(folder: str, n: int, size: int = 140, seed: int = 0) -> str:
    """``n`` JPEGs in 3 class folders: a class colour, noise and a darker square where the class says."""
    from PIL import Image

    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    rng = np.random.default_rng(seed)
    colours = np.array([(200, 60, 60), (60, 200, 60), (60, 60, 200)])
    for i in range(n):
        c = i % 3
        os.makedirs(os.path.join(folder, f"class{c}"), exist_ok=True)
        pixels = np.clip(colours[c] + rng.normal(0, 25, (size, size, 3)), 0, 255)
        corner = (c * size) // 3
        pixels[corner:corner + size // 4, corner:corner + size // 4] *= 0.5
        Image.fromarray(pixels.astype("uint8")).save(os.path.join(folder, f"class{c}", f"{i:06d}.jpg"), quality=90)
    open(done, "w").close()
    return folder


# Runs `train` in this process with keras_transfer.data.images.decode_file counting the bytes it decodes;
# the supervisor's pipe is given, so a cluster worker runs here rather than in a child process.
COUNTING = """
import json, os, sys
sys.path.insert(0, os.getcwd())
r, w = os.pipe()
os.environ["KERAS_TRANSFER_SUPERVISOR_FD"] = str(w)
import keras_transfer.data.images as images
decoded = {"bytes": 0, "files": set()}
real = images.decode_file
def counting(path):
    decoded["bytes"] += os.path.getsize(path)
    decoded["files"].add(path)
    return real(path)
images.decode_file = counting
from keras_transfer.cli.entry_point import main
code = main(sys.argv[1:])
print("DECODED " + json.dumps({"bytes": decoded["bytes"], "distinct_bytes": sum(os.path.getsize(p) for p in decoded["files"])}))
sys.exit(code)
"""


def measure(repo: str, data: str, work: str) -> dict:
    """One train in a fresh process, its peak RSS read by a watcher that is its only child's parent."""
    watcher = ("import resource, subprocess, sys, json, time; t = time.perf_counter(); "
               "code = subprocess.call(sys.argv[1:]); "
               "print('WATCHED ' + json.dumps({'code': code, 'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN)"
               ".ru_maxrss / 1024, 'seconds': time.perf_counter() - t}))")
    out = tempfile.mkdtemp(prefix="run-", dir=work)
    os.rmdir(out)
    env = {**os.environ, "KERAS_TRANSFER_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=work),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", watcher, sys.executable, "-m", "keras_transfer", "train", "--data",
                           data, *COMMAND, "--out", out], cwd=repo, env=env, capture_output=True, text=True)
    text = done.stdout + done.stderr
    watched = json.loads(next(line for line in text.splitlines() if line.startswith("WATCHED "))[8:])
    if watched["code"] != 0:
        raise RuntimeError(f"train failed in {repo} ({watched['code']}):\n{text[-3000:]}")
    return {**watched, **facts(text)}


def facts(text: str) -> dict:
    """What the run's log says: streamed or not, the probe's cut, the cached bytes an image."""
    cut = re.search(r"recommends removing (\d+) unit\(s\): the model ends at (\S+)", text)
    per_image = re.findall(r"on cached (\S+) features.*?\(([\d.]+ (?:KB|bytes)) an image", text)
    return {"streamed": "streaming them from their files" in text,
            "cut": f"{cut.group(1)} removed, ends at {cut.group(2)}" if cut else "?",
            "cached": "; ".join(f"{name}: {size}" for name, size in dict(per_image).items()) or "(not stated)"}


def two_workers(repo: str, data: str, work: str) -> list[dict]:
    """The same train as a 2-worker cluster on loopback; each worker's share of the files' bytes decoded."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tempfile.mkdtemp(prefix="run-", dir=work)
    os.rmdir(out)
    cache = tempfile.mkdtemp(prefix="cache-", dir=work)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "KERAS_TRANSFER_CACHE_DIR": cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(subprocess.Popen([sys.executable, "-c", COUNTING, "train", "--data", data, *COMMAND, "--out", out],
                                      cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs if f.endswith(".jpg"))
    reports = []
    for proc in procs:
        text = proc.communicate()[0]
        if proc.returncode != 0:  # reported, not fatal: e.g. -9, killed when memory ran out
            reports.append({"failed": proc.returncode, "log": text[-2000:]})
            continue
        decoded = json.loads(next(line for line in text.splitlines() if line.startswith("DECODED "))[8:])
        reports.append({"share": decoded["bytes"] / total, "distinct_share": decoded["distinct_bytes"] / total,
                        **facts(text)})
    return reports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000])
    p.add_argument("--repos", nargs="+", default=[f"now={os.path.dirname(HERE)}"],
                   help="NAME=CHECKOUT pairs run side by side (default: this checkout)")
    p.add_argument("--workers", type=int, default=1, choices=[1, 2])
    p.add_argument("--images", default=os.path.join(tempfile.gettempdir(), "keras-transfer-scale"),
                   help="where the synthetic images are written (kept for reruns)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "scale.json"))
    args = p.parse_args()
    repos = dict(r.split("=", 1) for r in args.repos)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        for n in args.sizes:
            data = write_images(os.path.join(args.images, str(n)), n)
            for name, repo in repos.items():
                key = f"{name}/{n}"
                if args.workers == 2:
                    results[key] = two_workers(os.path.abspath(repo), data, work)
                    shares = " / ".join(f"failed (exit code {r['failed']})" if "failed" in r else
                                        f"{r['share']:.2f} ({r['distinct_share']:.2f} distinct)" for r in results[key])
                    print(f"{key:>16}: 2 workers each decoded {shares} of the files' bytes", flush=True)
                    continue
                results[key] = measure(os.path.abspath(repo), data, work)
                r = results[key]
                print(f"{key:>16}: peak RSS {r['rss_mb']:7.0f} MB  {r['seconds']:6.0f} s  streamed {r['streamed']}  "
                      f"cut {r['cut']}  cached {r['cached']}", flush=True)
    if args.workers == 1 and len(args.sizes) > 1:
        lo, hi = min(args.sizes), max(args.sizes)
        print(f"\npeak RSS from {lo:,} to {hi:,} images (the target: within 1.3x)")
        for name in repos:
            a, b = results[f"{name}/{lo}"]["rss_mb"], results[f"{name}/{hi}"]["rss_mb"]
            print(f"{name:>10}: {a:7.0f} MB -> {b:7.0f} MB  ({b / a:.2f}x)")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"command": COMMAND, "sizes": args.sizes, "workers": args.workers, "results": results}, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
