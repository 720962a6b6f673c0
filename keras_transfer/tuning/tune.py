"""The ``tune`` command: run (or resume, or join) a search, judge it against its floor, export the winner."""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import keras_tuner

from keras_transfer import data as data_lib
from keras_transfer import export, training
from keras_transfer._utils.atomic_files import read_json, write_json
from keras_transfer._utils.keras_internals import tuner_is_worker
from keras_transfer.models.backbones import build_base
from keras_transfer.runs import run_folders
from keras_transfer.runs.config import SearchConfig
from keras_transfer.training import cut_probe, distribute, linear_probe, precision
from keras_transfer.training.precision import as_float32
from keras_transfer.tuning.folder import check_search_dir, start_search_dir
from keras_transfer.tuning.hypermodel import SearchSpace, TransferHyperModel
from keras_transfer.tuning.oracles import (
    GridOracle,
    HalvingOracle,
    atomic,
    configurations,
    default_first,
    name_trials_by_id,
)
from keras_transfer.tuning.results import format_top, trial_rows, write_results

logger = logging.getLogger("keras_transfer.tuning")

KINDS = ("random", "bayesian", "hyperband", "grid", "halving")
# Keras reports accuracy in float32 (94/120 = 0.78333336), numpy in float64 (0.78333333): equal
# fractions differ by ~1e-8, far less than one image of any validation set
ACCURACY_TOLERANCE = 1e-6


def make_tuner(hypermodel: TransferHyperModel, kind: str = "random", directory: str = "search",
               project_name: str = "transfer", max_trials: int = 12, objective: str = "val_accuracy",
               overwrite: bool = False, seed: int = 0, max_epochs: int = 6, budgets=None) -> keras_tuner.Tuner:
    """A Keras Tuner tuner over ``hypermodel``; resumes an existing ``directory/project_name``.

    ``kind``: Keras Tuner's ``random`` and ``bayesian`` (their first trial: the default recipe),
    ``hyperband``, or this package's ``grid`` and ``halving`` oracles (:mod:`.oracles`; at most
    ``max_trials`` configurations; halving's ``budgets`` default to 1+1 epochs, then the recipe's).
    The same ``seed`` gives the same trials. (Keras Tuner reads a seed of 0 as "none" and draws
    a random one, ``seed or random.randint(...)``, so the oracle gets ``seed + 1``.)
    """
    goal = keras_tuner.Objective(objective, "max" if "acc" in objective else "min")
    where = dict(directory=directory, project_name=project_name, overwrite=overwrite)
    if kind == "hyperband":  # its tuner continues trials from their checkpoints: keep Keras Tuner's own
        tuner = Hyperband(hypermodel, max_epochs=max_epochs, factor=3, objective=goal, seed=seed + 1, **where)
        if isinstance(tuner.oracle, keras_tuner.Oracle):  # Hyperband builds its oracle itself; a worker's is
            tuner.oracle.__class__ = atomic(type(tuner.oracle))  # the chief's client, which saves nothing
            name_trials_by_id(tuner.oracle)
        return tuner
    if kind == "random":
        oracle = default_first(keras_tuner.oracles.RandomSearchOracle)(objective=goal, max_trials=max_trials,
                                                                       seed=seed + 1)
    elif kind == "bayesian":
        oracle = default_first(keras_tuner.oracles.BayesianOptimizationOracle)(objective=goal, max_trials=max_trials,
                                                                               seed=seed + 1)
    elif kind in ("grid", "halving"):
        configs = configurations(hypermodel, max_trials, seed)
        if kind == "grid":
            oracle = GridOracle(configs, objective=goal, seed=seed + 1)
        else:
            recipe = hypermodel.recipe
            oracle = HalvingOracle(configs, budgets or ((1, 1), (recipe.head_epochs, recipe.fine_tune_epochs)),
                                   objective=goal, seed=seed + 1)
    else:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}. Received: kind={kind!r}")
    return Tuner(oracle=oracle, hypermodel=hypermodel, **where)


class AtomicTunerSave:
    """Keras Tuner's tuner writes ``tuner0.json`` in place; a torn one would stop the search
    resuming (see :class:`~keras_transfer.tuning.oracles.AtomicSaves` for the oracle's files)."""

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        write_json(self._get_tuner_fname(), self.get_state())


class Tuner(AtomicTunerSave, keras_tuner.Tuner):
    pass


class Hyperband(AtomicTunerSave, keras_tuner.Hyperband):
    pass


def run_search(config: SearchConfig, out_dir: str, verbose: int = 1, splits=None) -> dict:
    """Run (or resume, or join as a distributed worker) a search; on the chief write
    ``results.csv``, ``heatmap.png``, ``best.json`` (with the floor) and export the best trial.
    ``splits``: the images, already loaded (default: ``config.data``'s). Models compute in
    ``config.distribute.precision`` (the global policy is restored after). Returns ``best.json``'s
    content plus ``table``, the rows of ``results.csv``. ``keras-transfer tune`` and
    :func:`keras_transfer.tuning.search` both call this."""
    with precision.using(config.distribute.precision, backbone=config.model.backbone):
        if tuner_is_worker():  # a distributed worker: the chief's oracle owns the folder
            return _search_in(config, out_dir, verbose, True, splits)
        with run_folders.locked(out_dir, "keras-transfer tune"):
            return _search_in(config, out_dir, verbose, check_search_dir(out_dir, config), splits)


def removed_range(config: SearchConfig, splits, out_dir: str | None):
    """``(removed range, the probe's recommendation or None)``: ``config.search.removed_range``, or
    with ``"auto"`` the probe's recommendation +-1 unit (written to ``out_dir`` if given)."""
    if config.search.removed_range != "auto":
        return config.search.removed_range, None
    result = cut_probe.recommend_for(config.model.backbone, config.model.weights, splits, config.data.seed,
                                     config.recipe.make(config.data.seed).batch_size)
    if out_dir:
        cut_probe.write(result, out_dir)
    best, top = result["recommended_removed"], len(result["cuts"]) - 1
    logger.info("removed range auto: the probe recommends %d; searching %d:%d", best, max(0, best - 1), min(top, best + 1))
    return (max(0, best - 1), min(top, best + 1)), best


def _search_in(config: SearchConfig, out_dir: str, verbose: int, resuming: bool, splits=None) -> dict:
    strategy = distribute.strategy_for(config.distribute.strategy, config.distribute.devices)
    if splits is None:
        splits = _load(config, strategy, verbose)
    logger.info(splits.summary())
    if not splits.has_val:  # before the search folder is written or a trial trains
        raise ValueError("a search scores each trial on its validation images, and these splits have none. Split "
                         "off validation images (validation_split > 0).")
    chief = not tuner_is_worker()
    if chief:
        start_search_dir(out_dir, config, splits, resuming)
        os.makedirs(out_dir, exist_ok=True)
        data_lib.write_skipped_report(splits.skipped, os.path.join(out_dir, "skipped.csv"))
        for s in splits.skipped:
            logger.warning(f"  skipped {s.path}: {s.reason}")
    recipe = dataclasses.replace(config.recipe.make(config.data.seed, dataset=config.data.dataset), verbose=0)
    removed, recommended = removed_range(config, splits, out_dir if chief else None)
    space = SearchSpace(removed, config.search.frozen_range, config.search.widths, config.search.dropouts,
                        config.search.learning_rates, config.search.head_kinds, default_removed=recommended)
    hypermodel = TransferHyperModel(config.model.backbone, splits.num_classes, recipe, space,
                                    weights=config.model.weights, input_size=splits.image_size[0], strategy=strategy)
    tuner = make_tuner(hypermodel, config.search.tuner, directory=out_dir, project_name="trials",
                       max_trials=config.search.trials, seed=config.data.seed,
                       max_epochs=recipe.head_epochs + recipe.fine_tune_epochs)
    if chief and len(tuner.oracle.trials):
        logger.info(f"resuming the search in {out_dir}: {len(tuner.oracle.trials)} trial(s) kept")
    tuner.search(splits, verbose=verbose, callbacks=_tensorboard(config, out_dir))
    if not chief:
        logger.info(f"tuner {os.environ.get('KERASTUNER_TUNER_ID', '')}: no trials left, done")
        return {}
    rows = trial_rows(tuner, hypermodel)
    summary = _summarise(rows, hypermodel, out_dir)
    if config.search.retrain_best:
        best_hp = tuner.oracle.get_trial(summary["best"]["trial_id"]).hyperparameters
        summary.update(_export_best(tuner, best_hp, hypermodel, summary["best"], splits, config, out_dir, verbose))
    summary["floor"] = judge(summary, search_floor(hypermodel, splits, recipe.batch_size))
    write_json(os.path.join(out_dir, "best.json"), summary)
    return {**summary, "table": rows}  # results.csv's rows, for the caller (not kept twice on disk)


def _load(config: SearchConfig, strategy, verbose: int):
    cost = None
    if config.data.in_memory == "auto":  # weighed on the first trial's recipe, the default
        cost = dataclasses.replace(  # the trials read the images again and again (each its own frozen prefix)
            training.run_cost(config.model.backbone, config.data.size(config.model.backbone),
                              config.recipe.make(config.data.seed, dataset=config.data.dataset), strategy=strategy),
            read_once=False)
    return config.data.load(config.model.backbone, progress=verbose > 0, cost=cost)


def _tensorboard(config: SearchConfig, out_dir: str) -> list:
    """Keras Tuner gives a TensorBoard callback a folder per trial and writes the HParams dashboard."""
    logs = config.recipe.make(config.data.seed).tensorboard
    if logs is None:
        return []
    return [keras.callbacks.TensorBoard(logs or os.path.join(out_dir, "tensorboard"))]


def _summarise(rows: list[dict], hypermodel: TransferHyperModel, out_dir: str) -> dict:
    """Write results.csv/heatmap.png, log failures and the top trials; the search's summary."""
    best = write_results(rows, out_dir)
    failed = [r for r in rows if r["status"] == "FAILED"]
    for r in failed:
        logger.warning(f"trial {r['trial_id']} FAILED: {r['message']}")
    if not best:
        raise RuntimeError(f"all {len(rows)} trial(s) failed; see the messages above and {out_dir}/results.csv")
    logger.info(f"{sum(r['status'] == 'COMPLETED' for r in rows)} completed, {len(failed)} failed; top trials:")
    logger.info(format_top(rows))
    logger.info(f"feature cache in this process: {hypermodel.cache.hits} hits, {hypermodel.cache.misses} misses")
    return {"best": best, "trials": len(rows), "failed": len(failed)}


# ---- the floor ------------------------------------------------------------------------------

def search_floor(hypermodel: TransferHyperModel, splits, batch_size: int = 32) -> dict:
    """What the search must beat, on its own images: the majority class, and the linear probe
    (:func:`keras_transfer.training.linear_probe.floor`) on the pooled features at each cut of the searched
    removed range, fitted on the train split; the cut whose probe scores best on validation."""
    keras.utils.set_random_seed(hypermodel.recipe.seed)  # weights=None: the same random backbone every run
    base = build_base(hypermodel.backbone, weights=hypermodel.weights, input_shape=(*splits.image_size, 3))
    cuts = [(r, name) for r, name in cut_probe.cut_candidates(base)
            if hypermodel.removed_range[0] <= r <= hypermodel.removed_range[1]]
    parts = [splits.train, splits.val, splits.test]
    pooled = [cut_probe.pooled_features_at(base, [name for _, name in cuts], part.images, batch_size) for part in parts]
    best = None
    for i, (removed, name) in enumerate(cuts):
        fitted = linear_probe.floor(*[(pooled[p][i], parts[p].labels) for p in range(3)])
        if best is None or (fitted["val_accuracy"] or 0) > (best["val_accuracy"] or 0):
            best = {**fitted, "removed": removed, "layer": name}
    return {"majority_val": linear_probe.majority(splits.train.labels, splits.val.labels),
            "majority_test": linear_probe.majority(splits.train.labels, splits.test.labels), "linear_probe": best}


def judge(summary: dict, floor: dict) -> dict:
    """``floor`` with ``below``: whether the search's result is under the linear probe's
    validation accuracy (it found nothing a logistic regression on its features does not). The
    result is the exported model's own validation accuracy when there is an export, else the
    best trial's; warns, and warns too when the export scores below its trial."""
    best, lp = summary["best"], floor["linear_probe"]
    logger.info(f"floor: majority class val {_fmt(floor['majority_val'])}; linear probe (logistic regression on pooled "
                f"{lp['layer']} features) val {_fmt(lp['val_accuracy'])}, test {_fmt(lp['test_accuracy'])}")
    exported = summary.get("val_accuracy") if summary.get("export") else None
    shown, what = (exported, "the exported model") if exported is not None else (best["val_accuracy"], "the best trial")
    below = lp["val_accuracy"] is not None and shown < lp["val_accuracy"] - ACCURACY_TOLERANCE
    if below:
        logger.warning(f"{what} (trial {best['trial_id']}: val accuracy {shown:.3f}) is below the linear-probe floor "
                       f"(val {lp['val_accuracy']:.3f}: logistic regression on pooled {lp['layer']} features). Widen "
                       f"the search (include --widths 0, the default recipe's linear head), train longer (--head-epochs, "
                       f"--fine-tune-epochs), or give it more validation images.")
    under_trial = exported is not None and exported < best["val_accuracy"] - ACCURACY_TOLERANCE
    if under_trial:
        logger.warning(f"the exported model scores val accuracy {exported:.3f}, below its trial's {best['val_accuracy']:.3f} "
                       f"in the search ({summary.get('exported_from')}); the search's ranking rests on a difference "
                       f"this small.")
    return {**floor, "below": bool(below), "export_below_trial": bool(under_trial)}


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ---- the winner -----------------------------------------------------------------------------

def _export_best(tuner, hp, hypermodel: TransferHyperModel, best: dict, splits, config: SearchConfig, out_dir: str,
                 verbose: int) -> dict:
    """Export the best trial (its hyperparameters ``hp``) with the weights it kept, which its
    checkpoint holds (a trial run by a worker on another machine is retrained here instead),
    scored on validation and test as served (float32); unless this folder already exported this
    trial: a rerun of a finished search changes nothing."""
    before = read_json(os.path.join(out_dir, "best.json"), {}) or {}
    if before.get("export") and os.path.isdir(before["export"]) and before.get("best", {}).get("trial_id") == best["trial_id"]:
        logger.info(f"the best trial ({best['trial_id']}) was exported before: {before['export']} (kept)")
        return {k: before.get(k) for k in ("val_accuracy", "test_accuracy", "export", "exported_from")}
    model = hypermodel.build(hp)
    checkpoint = tuner._get_checkpoint_fname(best["trial_id"])
    if os.path.exists(checkpoint):
        training.load_weights(model, checkpoint, f"Run the search in a new folder (--out), or delete {checkpoint} "
                                                 f"to retrain that trial for the export.")
        source = "the weights the trial kept"
    else:
        logger.info(f"the best trial ({best['trial_id']}) has no checkpoint here (run on another machine?): "
                    "retraining it on the train split")
        final = dataclasses.replace(hypermodel.trial_recipe(hp), verbose=verbose)
        training.fine_tune(model, splits, final, strategy=hypermodel.strategy, cache=hypermodel.cache)
        source = "retrained"
    served = as_float32(model)  # the export computes in float32: score what is served
    val = training.evaluate(served, splits.val)["accuracy"] if len(splits.val) else None
    test = training.test_scores(served, splits)["accuracy"]
    path = export.export(served, os.path.join(out_dir, "export"), splits.class_names,
                         {"backbone": config.model.backbone, "best_trial": best, "val_accuracy": val,
                          "test_accuracy": test})
    logger.info(f"exported trial {best['trial_id']} ({source}) to {path}: val accuracy {_fmt(val)}, "
                f"test accuracy {_fmt(test)}")
    return {"val_accuracy": val, "test_accuracy": test, "export": path, "exported_from": source}
