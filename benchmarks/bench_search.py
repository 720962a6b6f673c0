"""Wall time of a 12-trial removed x frozen search on ELPV (VGG16 hed, small input), side by side:

  plain      no feature caching (every trial trains end to end)
  per-trial  frozen-prefix features cached within a trial only
  shared     one FeatureCache for the whole search (what `keras-transfer tune` does)

All three run the same seeded random search (the same 12 trials). Resident memory is printed
after every trial of the shared run: it must stay flat. A per-trial table shows where the time
goes, and the best speed-up caching could reach on these trials. With --workers N, instead time the same
search through the CLI with a chief and N workers on 127.0.0.1 against a chief and 1 worker.

    python benchmarks/bench_search.py [--trials 12] [--size 64] [--per-class 100]
    python benchmarks/bench_search.py --workers 2
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

from keras_transfer import data, training, tuning


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Measured(tuning.TransferHyperModel):
    """Records each trial's wall time (build + fit), how its fine-tuning stage trained, and
    memory after it; optionally empties the cache per trial."""

    def __init__(self, *args, share=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.share, self.rss, self.trials = share, [], []

    def build(self, hp):
        self._started = time.perf_counter()
        return super().build(hp)

    def fit(self, hp, model, *args, **kwargs):
        if not self.share:
            self.cache = training.FeatureCache()
        result = super().fit(hp, model, *args, **kwargs)
        seconds = time.perf_counter() - self._started  # before the split below, which is not part of the trial
        k = self.frozen_layers(hp.get("removed"), hp.get("frozen_units"))
        parts = training.split_model(model, k)
        self.trials.append({"seconds": seconds, "k": k, "hp": dict(hp.values),
                            "stage2": f"cached {parts[2]}" if parts else "end to end"})
        self.rss.append((rss_mb(), self.cache.nbytes / 2**20))
        return result


def run(mode, splits, args, out):
    recipe = training.Recipe(head_epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, batch_size=32,
                             cache_features=mode != "plain", seed=0, verbose=0, patience=None)
    hm = Measured("vgg16", splits.num_classes, recipe, tuning.SearchSpace(removed_range=(0, 3)), weights="hed",
                  input_size=args.size, share=mode == "shared")
    tuner = tuning.make_tuner(hm, "random", out, project_name=mode, max_trials=args.trials, seed=args.seed,
                              overwrite=True)
    start = time.perf_counter()
    tuner.search(splits, verbose=0)
    seconds = time.perf_counter() - start
    rows = tuning.trial_rows(tuner, hm)
    assert all(r["status"] == "COMPLETED" for r in rows), [r["message"] for r in rows]
    return seconds, rows, hm


def per_trial_table(runs, rows):
    """Seconds per trial in each mode, and what caching cannot speed up: trials whose
    fine-tuning stage trains (nearly) the whole backbone run end to end on every path."""
    modes = list(runs)
    shared = runs.get("shared") or runs[modes[-1]]
    print("\ntrial removed frozen(k)  fine-tuning stage in the cached modes   " + "  ".join(f"{m:>9}" for m in modes))
    for m in modes:  # the same seeded trials in every mode, else the comparison means nothing
        assert [t["hp"] for t in runs[m].trials] == [t["hp"] for t in shared.trials], f"{m} ran other trials"
    for i, (row, t) in enumerate(zip(rows, shared.trials)):
        print(f"{i:>5} {row['removed']:>7} {row['frozen_units']:>3} ({t['k']:>2})  {t['stage2']:<38} "
              + "  ".join(f"{runs[m].trials[i]['seconds']:8.1f}s" for m in modes))
    if "plain" in runs and "shared" in runs:
        plain = sum(t["seconds"] for t in runs["plain"].trials)
        floor = sum(t["seconds"] for t in runs["shared"].trials if t["stage2"] == "end to end")
        print(f"trials whose fine-tuning runs end to end take {floor:.0f} s of the shared search: even if every "
              f"other trial took 0 s, shared caching could reach at most {plain / floor:.1f}x" if floor else "")


def in_process(args):
    splits = data.load(dataset="elpv", image_size=args.size, limit=args.per_class, seed=args.seed,
                       validation_split=0.2, progress=False)
    print(f"ELPV binary: {len(splits.train)} train / {len(splits.val)} val at {args.size}x{args.size}; VGG16 hed; "
          f"{args.trials} trials of {args.epochs}+{args.fine_tune_epochs} epochs, removed 0..3 x frozen units")
    out = tempfile.mkdtemp(prefix="bench-search-")
    results, runs = {}, {}
    try:
        for mode in args.modes:
            seconds, rows, hm = run(mode, splits, args, out)
            results[mode], runs[mode] = seconds, hm
            extra = f"  cache hits {hm.cache.hits} / misses {hm.cache.misses}" if mode == "shared" else ""
            print(f"{mode:<10} {seconds:7.1f} s{extra}", flush=True)
            if mode == "shared":
                print("RSS after each trial (MB):           " + " ".join(f"{r:5.0f}" for r, _ in hm.rss))
                print("  of which the shared feature cache: " + " ".join(f"{c:5.0f}" for _, c in hm.rss))
                print("  RSS without the cache:             " + " ".join(f"{r - c:5.0f}" for r, c in hm.rss))
                if len(hm.rss) >= 3:
                    (r3, c3), (rn, cn) = hm.rss[2], hm.rss[-1]
                    print(f"growth trial 3 -> {len(hm.rss)}: RSS {rn - r3:+.0f} MB, "
                          f"without the cache {(rn - cn) - (r3 - c3):+.0f} MB")
                if len(hm.rss) >= 5:  # the trend, less noisy than two points: least-squares slope from trial 3 on
                    no_cache = [r - c for r, c in hm.rss[2:]]
                    slope = np.polyfit(np.arange(len(no_cache)), no_cache, 1)[0]
                    print(f"trend of RSS without the cache, trial 3 -> {len(hm.rss)}: {slope:+.1f} MB per trial")
                best = max(rows, key=lambda r: r["val_accuracy"])
                print(f"best trial: removed {best['removed']}, frozen units {best['frozen_units']} "
                      f"(k={best['frozen_layers']}), width {best['width']}, dropout {best['dropout']}, "
                      f"lr {best['learning_rate']:g}: val accuracy {best['val_accuracy']:.3f}")
        per_trial_table(runs, rows)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if {"plain", "per-trial", "shared"} <= set(results):
        print(f"speed-up shared vs plain {results['plain'] / results['shared']:.1f}x, "
              f"shared vs per-trial {results['per-trial'] / results['shared']:.1f}x")


def distributed(args):
    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return str(s.getsockname()[1])

    def search(workers):
        out = tempfile.mkdtemp(prefix="bench-dist-")
        cmd = [sys.executable, "-m", "keras_transfer", "tune", "--dataset", "elpv", "--limit-per-class",
               str(args.per_class), "--backbone", "vgg16", "--weights", "hed", "--input-size", str(args.size),
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--fine-tune-epochs",
               str(args.fine_tune_epochs), "--removed-range", "0:3", "--no-retrain", "--out", out]
        port = free_port()
        env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": port}
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, env={**env, "KERASTUNER_TUNER_ID": "chief"}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)]
        deadline = time.time() + 120  # the workers need the chief's oracle listening
        while time.time() < deadline and procs[0].poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(port))) == 0:
                    break
            time.sleep(0.1)
        procs += [subprocess.Popen(cmd, env={**env, "KERASTUNER_TUNER_ID": f"tuner{i}"}, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL) for i in range(workers)]
        try:
            codes = [p.wait(timeout=3600) for p in procs]
        finally:
            for p in procs:
                p.kill()
        seconds = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        if any(codes):
            raise SystemExit(f"a tuner process failed: exit codes {codes}")
        return seconds

    one = search(1)
    many = search(args.workers)
    print(f"{args.trials}-trial search, chief + 1 worker: {one:.1f} s; chief + {args.workers} workers: {many:.1f} s; "
          f"speed-up {one / many:.2f}x on {os.cpu_count()} cores")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2, help="head epochs per trial")
    parser.add_argument("--fine-tune-epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", nargs="+", default=["plain", "per-trial", "shared"],
                        choices=["plain", "per-trial", "shared"], help="which searches to time")
    parser.add_argument("--workers", type=int, default=0, help="time a distributed search with this many workers")
    args = parser.parse_args()
    distributed(args) if args.workers else in_process(args)


if __name__ == "__main__":
    main()
