"""Search time-to-best: the package's search against naive random search, on one small space.

Space: VGG16 ``hed`` on ELPV (binary) at 64 px, ``removed`` 0..3 x trained units 0..3 (frozen_units =
remaining units - trained; 0 trained = head only): 16 configurations, each a 2+3-epoch default
recipe. Judged by one yardstick: every configuration's validation accuracy in an exhaustive
sweep (run once, kept in ``benchmarks/results/search_sweep_*.json`` per setting; ``--resweep`` redoes it).

- **naive**: random search without caching, float32. Its trials are the sweep's own (same
  code, same settings), so its time-to-target is computed exactly from the sweep's per-trial
  seconds: the mean over random orders of the time until a configuration within ``--tolerance``
  of the sweep's best has been trained.
- **package**, two ways, each with the per-cut probe pruning ``removed`` to its recommendation
  +-1 and running the recommended value first, on one shared feature cache (deeper cuts extended
  from shallower ones, heads trained once per removed value), in ``--precision``:
  ``grid`` (``tune --tuner grid``'s Oracle and order: the default recipe's configuration first, every
  configuration at the full 2+3 epochs) and ``halving`` (``tune --tuner halving``'s Oracle: every
  configuration for 1+1 epochs, the best third at 2+3), each a Keras Tuner search.
  Measured live: the wall time (probe included) until it has trained, at full budget, a
  configuration that the sweep scores within ``--tolerance`` of the best.

    python benchmarks/bench_time_to_best.py [--precision bfloat16] [--per-class 150] [--removed-max 3] [--resweep]
"""
import argparse
import json
import os
import tempfile
import time

import keras_tuner
import numpy as np

from keras_transfer import data, training, tuning
from keras_transfer.models.backbones import build_base
from keras_transfer.training import cut_probe, precision, recipes

HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = {"backbone": "vgg16", "weights": "hed", "dataset": "elpv", "size": 64, "per_class": 150,
            "removed": [0, 1, 2, 3], "trained_units": [0, 1, 2, 3], "epochs": [2, 3], "seed": 0}


def sweep_path() -> str:
    return os.path.join(HERE, "results", f"search_sweep_{SETTINGS['per_class']}pc_removed{SETTINGS['removed'][-1]}.json")


def hypermodel(splits, cache_features: bool, removed_range=None, default_removed=None):
    recipe = recipes.recipe(head_epochs=SETTINGS["epochs"][0], fine_tune_epochs=SETTINGS["epochs"][1], patience=None,
                            cache_features=cache_features, seed=SETTINGS["seed"], verbose=0)
    removed_range = removed_range or (0, SETTINGS["removed"][-1])
    space = tuning.SearchSpace(removed_range, (0, 14 - removed_range[0]), widths=(0,), dropouts=(0.2,),
                               learning_rates=(recipe.fine_tune_learning_rate,), default_removed=default_removed)
    return tuning.TransferHyperModel("vgg16", splits.num_classes, recipe, space, weights="hed", input_size=SETTINGS["size"])


def configs(hm, removed_values):
    return [{"removed": r, "frozen_units": hm.n_units - r - t} for r in removed_values for t in SETTINGS["trained_units"]]


def key(config) -> str:
    return f"{config['removed']}/{config['frozen_units']}"


def sweep(splits) -> dict:
    if os.path.exists(sweep_path()):
        saved = json.load(open(sweep_path()))
        if saved["settings"] == SETTINGS:
            return saved
    hm = hypermodel(splits, cache_features=False)
    rows = {}
    with precision.using("float32"):
        for config in configs(hm, SETTINGS["removed"]):
            hm.cache = training.FeatureCache()
            start = time.perf_counter()
            hp = tuning.fixed_hyperparameters(config)
            metrics = hm.fit(hp, hm.build(hp), splits)
            rows[key(config)] = {**metrics, "seconds": time.perf_counter() - start}  # build included
            print(f"sweep {key(config):>6}: val accuracy {metrics['val_accuracy']:.3f}  {rows[key(config)]['seconds']:5.1f} s",
                  flush=True)
    result = {"settings": SETTINGS, "trials": rows}
    os.makedirs(os.path.dirname(sweep_path()), exist_ok=True)
    json.dump(result, open(sweep_path(), "w"), indent=2)
    return result


def naive_time_to_target(trials: dict, target: float, orders: int = 5000) -> tuple[float, float]:
    names = list(trials)
    seconds = np.array([trials[n]["seconds"] for n in names])
    good = np.array([trials[n]["val_accuracy"] >= target for n in names])
    rng = np.random.default_rng(0)
    times = []
    for _ in range(orders):
        order = rng.permutation(len(names))
        first = np.argmax(good[order])
        times.append(seconds[order][: first + 1].sum())
    return float(np.mean(times)), float(np.median(times))


def package_search(splits, trials: dict, target: float, dtype: str, kind: str, head_memo: bool = True):
    start = time.perf_counter()
    marks = []
    with precision.using(dtype):
        base = build_base("vgg16", weights="hed", input_shape=(SETTINGS["size"],) * 2 + (3,))
        scores = cut_probe.score_cuts(base, splits.train.images, splits.train.labels, 32, SETTINGS["seed"])
        best = min(max(cut_probe.recommend(scores).removed, SETTINGS["removed"][0]), SETTINGS["removed"][-1])
        removed_values = [r for r in SETTINGS["removed"] if abs(r - best) <= 1]
        probe_s = time.perf_counter() - start
        hm = hypermodel(splits, cache_features=True, removed_range=(min(removed_values), max(removed_values)),
                        default_removed=best)
        if not head_memo:
            hm.cache.heads = training.HeadMemo(max_entries=0)  # every trial trains its own head
        wanted = {(c["removed"], hm.frozen_layers(c["removed"], c["frozen_units"])): key(c)
                  for c in configs(hm, removed_values)}
        # the package's own order (tune --tuner grid|halving), on the bench's configurations
        ordered = [c for c in tuning.configurations(hm) if (c["removed"], hm.frozen_layers(c["removed"], c["frozen_units"])) in wanted]
        goal = keras_tuner.Objective("val_accuracy", "max")
        oracle = (tuning.HalvingOracle(ordered, budgets=((1, 1), tuple(SETTINGS["epochs"])), objective=goal)
                  if kind == "halving" else tuning.GridOracle(ordered, objective=goal))
        final_rung = 1 if kind == "halving" else 0
        fit = hm.fit

        def timed_fit(hp, model, *args, **kwargs):
            result = fit(hp, model, *args, **kwargs)
            v = hp.values
            marks.append((time.perf_counter() - start, {"removed": v["removed"], "frozen_units": v["frozen_units"],
                                                         "rung": v.get(tuning.hypermodel.RUNG, 0), **result}))
            return result

        hm.fit = timed_fit
        with tempfile.TemporaryDirectory() as tmp:
            tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hm, directory=tmp, project_name=kind)
            tuner.search(splits, verbose=0)
    total = time.perf_counter() - start
    for _, row in marks:  # the sweep's name of a configuration (same frozen layer count)
        row["frozen_units"] = int(wanted[(row["removed"], hm.frozen_layers(row["removed"], row["frozen_units"]))].split("/")[1])
    reached = next((t for t, row in marks if row["rung"] == final_rung and trials[key(row)]["val_accuracy"] >= target), None)
    return {"probe_removed": best, "removed_values": removed_values, "probe_seconds": probe_s, "total": total,
            "time_to_target": reached, "trials": [(round(t, 1), key(r), r["rung"], r["val_accuracy"]) for t, r in marks]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--resweep", action="store_true")
    parser.add_argument("--per-class", type=int, default=150, help="ELPV images per class (default: %(default)s)")
    parser.add_argument("--removed-max", type=int, default=3, help="removed 0..N in the space (default: %(default)s)")
    parser.add_argument("--no-head-memo", action="store_true", help="trials never reuse a head trained before")
    args = parser.parse_args()
    SETTINGS.update(per_class=args.per_class, removed=list(range(args.removed_max + 1)))
    if args.resweep and os.path.exists(sweep_path()):
        os.remove(sweep_path())
    splits = data.load(dataset="elpv", image_size=SETTINGS["size"], limit=SETTINGS["per_class"], seed=SETTINGS["seed"],
                       validation_split=0.2, progress=False)
    print(f"ELPV binary: {len(splits.train)} train / {len(splits.val)} val at {SETTINGS['size']} px; VGG16 hed")
    result = sweep(splits)
    trials = result["trials"]
    best = max(v["val_accuracy"] for v in trials.values())
    target = best - args.tolerance + 1e-9
    winners = [k for k, v in trials.items() if v["val_accuracy"] >= target]
    naive_mean, naive_median = naive_time_to_target(trials, target)
    sweep_total = sum(v["seconds"] for v in trials.values())
    print(f"sweep: {len(trials)} configurations, {sweep_total:.0f} s; best val accuracy {best:.3f}; "
          f"within {args.tolerance:.2f}: {', '.join(winners)} (removed/frozen_units)")
    packages = {}
    for kind in ("grid", "halving"):
        pkg = packages[kind] = package_search(splits, trials, target, args.precision, kind, not args.no_head_memo)
        print(f"package {kind}: probe recommends removed {pkg['probe_removed']} ({pkg['probe_seconds']:.0f} s) -> "
              f"removed {pkg['removed_values']}; shared cache, {args.precision}; whole search {pkg['total']:.0f} s")
        for t, k, rung, acc in pkg["trials"]:
            print(f"  {t:7.1f} s  rung {rung}  {k:>6}  val {acc:.3f}  (sweep {trials[k]['val_accuracy']:.3f})")
    print(f"\n{'search':<36} {'time to within ' + format(args.tolerance, '.2f') + ' of best':>26}   whole search")
    print(f"{'naive random (no cache, float32)':<36} {naive_mean:>20.0f} s mean ({naive_median:.0f} s median)")
    for kind, pkg in packages.items():
        name = f"package: probe + {kind} + cache"
        if pkg["time_to_target"] is None:
            print(f"{name:<36} {'never':>22}    {pkg['total']:5.0f} s  (its full-budget configurations all score "
                  f"lower in the sweep)")
        else:
            print(f"{name:<36} {pkg['time_to_target']:>20.0f} s   {pkg['total']:5.0f} s  "
                  f"speed-up {naive_mean / pkg['time_to_target']:.1f}x (mean)")
    memo = "_no_head_memo" if args.no_head_memo else ""
    out = os.path.join(HERE, "results", f"time_to_best_{args.per_class}pc_removed{args.removed_max}_{args.precision}{memo}.json")
    json.dump({"target": target, "best": best, "naive_mean": naive_mean, "naive_median": naive_median, **packages},
              open(out, "w"), indent=2)


if __name__ == "__main__":
    main()
