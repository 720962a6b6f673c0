"""Keras Tuner search over how many pretrained units to remove and to freeze.

Zhi et al. (seed 000): the best number of layers to remove depends on the dataset and must be
tuned. :class:`TransferHyperModel` makes that a Keras Tuner search space:

- ``removed``: units dropped from the top of the backbone (``chop(removed=)``);
- ``frozen_units``: freeze the backbone through its j-th remaining unit (0 = none frozen; the
  top value = all frozen, head only), so a block is never split;
- ``width``, ``dropout``: the head; ``learning_rate``: fine-tuning; optionally ``head``.

Trials share one :class:`~keras_transfer.training.FeatureCache`: every trial whose frozen
prefix is the same (same backbone, weights, input size and cut) reuses its features, a deeper
prefix extends a shallower one's, and trials run without callbacks (the grid and halving tuners) that
start the head stage alike (same removed units and head) train it once. Keras
Tuner clears the Keras session before each build, and each trial's traced graphs are let go
(:func:`~keras_transfer.internals.forget_custom_gradients`), so memory does not grow trial after trial.
A search is resumable (``overwrite=False``) and runs distributed from Keras Tuner's
``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT``. Its folder
defends itself: ``search.json`` and ``data.json`` record the settings and the images it was
started with, and it resumes only with the same (``--trials`` may grow); a folder holding
anything else is refused, and one process at a time runs the search's oracle there.
"""

from __future__ import annotations

import logging
import csv
import dataclasses
import os
import time

import keras
import keras_tuner
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import training
from keras_transfer.config import SearchConfig, parse_range  # noqa: F401 - tuning.SearchConfig etc., as before
from keras_transfer.backbones import build_base, get_backbone
from keras_transfer.surgery import chop, layer_index, units
from keras_transfer.internals import forget_custom_gradients, tuner_is_worker

logger = logging.getLogger(__name__)

ALL = "all"


class TransferHyperModel(keras_tuner.HyperModel):
    """The removed x frozen search space on one backbone (see the module docstring).

    Args:
        backbone, weights, input_size: as for ``build_base``.
        num_classes: classes of the data.
        splits: the train/val data every trial trains on (``fit`` reads it).
        removed_range: ``(lo, hi)`` units to remove, inclusive (default ``(0, min(3, n-1))``).
        frozen_range: ``(lo, hi)`` for ``frozen_units``, inclusive (default: all of ``0..max_frozen_units``);
            a high ``lo`` keeps every trial, and retraining its winner, cheap on a CPU.
        widths, dropouts, learning_rates: choices for the head and fine-tuning.
        head_kinds: heads to choose among (``("gap_dense",)`` keeps it fixed).
        recipe: epochs, batch size... of each trial (``frozen`` and the fine-tuning rate are tuned).
        cache: the shared feature cache (a new one by default).
        strategy: the tf.distribute strategy models are built under.
    """

    def __init__(self, backbone: str, num_classes: int, splits: data_lib.Splits | None = None,
                 weights="imagenet", input_size: int | None = None, removed_range: tuple[int, int] | None = None,
                 frozen_range: tuple[int, int] | None = None, widths=(256, 1024), dropouts=(0.0, 0.5), learning_rates=(1e-4, 1e-3),
                 head_kinds=("gap_dense",), recipe: training.Recipe | None = None,
                 cache: training.FeatureCache | None = None, strategy=None, name: str | None = None):
        super().__init__(name=name or f"transfer_{backbone}", tunable=True)
        row = get_backbone(backbone)
        self.backbone, self.weights, self.num_classes = backbone, weights, num_classes
        self.input_size = input_size or row.default_size
        # a random-init template gives unit names and layer indices without loading weights
        self.template = build_base(backbone, weights=None, input_shape=(self.input_size, self.input_size, 3))
        self.n_units = len(units(self.template))
        lo, hi = removed_range if removed_range is not None else (0, min(3, self.n_units - 1))
        if not 0 <= lo <= hi < self.n_units:
            raise ValueError(f"removed range {lo}:{hi} must lie in 0:{self.n_units - 1} "
                             f"({backbone} has {self.n_units} units).")
        self.removed_range = (lo, hi)
        f_lo, f_hi = frozen_range if frozen_range is not None else (0, self.max_frozen_units)
        if not 0 <= f_lo <= f_hi <= self.max_frozen_units:
            raise ValueError(f"frozen_range must lie in 0:{self.max_frozen_units} (the top value freezes everything). "
                             f"Received: frozen_range={frozen_range}")
        self.frozen_range = (f_lo, f_hi)
        for name_, values in (("widths", widths), ("dropouts", dropouts), ("learning_rates", learning_rates),
                              ("head kinds", head_kinds)):
            if not values:
                raise ValueError(f"{name_} must offer at least one choice.")
        self.widths, self.dropouts = [int(w) for w in widths], [float(d) for d in dropouts]
        self.learning_rates, self.head_kinds = [float(r) for r in learning_rates], list(head_kinds)
        self.splits = splits
        self.recipe = recipe or training.Recipe(head_epochs=2, fine_tune_epochs=3, verbose=0)
        self.cache = cache if cache is not None else training.FeatureCache()
        self.strategy = strategy

    # ---- search space -------------------------------------------------------------------
    @property
    def max_frozen_units(self) -> int:
        """The top ``frozen_units`` value, meaning "all frozen" (units left at the shallowest cut + 1)."""
        return self.n_units - self.removed_range[0] + 1

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        removed = hp.Int("removed", *self.removed_range)
        head = hp.Choice("head", self.head_kinds) if len(self.head_kinds) > 1 else self.head_kinds[0]
        options = {"width": hp.Choice("width", self.widths),
                   "dropout": hp.Choice("dropout", self.dropouts) if len(self.dropouts) > 1 else self.dropouts[0],
                   "normalize": self.recipe.normalize}
        if head == "binary_auxiliary":
            options["seed"] = self.recipe.seed
        model = training.build_model(self.backbone, self.num_classes, weights=self.weights,
                                     input_size=self.input_size, removed=removed, head=head,
                                     include_top=head == "keep_classifier", strategy=self.strategy, **options)
        self._compile(model)
        return model

    def _compile(self, model: keras.Model) -> None:
        """Compile for Keras Tuner's checks; ``fit`` recompiles for each stage of the recipe."""
        from keras_transfer import heads

        model.compile(optimizer="rmsprop", **heads.compile_args(model))

    def frozen_layers(self, removed: int, frozen_units: int) -> int:
        """``frozen_units`` as a layer count ``k`` for a backbone with ``removed`` units dropped."""
        remaining = units(self.template)[: self.n_units - removed]
        if frozen_units <= 0:
            return 0
        if frozen_units > len(remaining):
            return len(chop(self.template, removed=removed).layers) if removed else len(self.template.layers)
        return layer_index(self.template, remaining[frozen_units - 1]) + 1

    # ---- training -----------------------------------------------------------------------
    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, **kwargs) -> dict:
        """Run the two-stage recipe; returns ``val_accuracy`` (best fine-tuning epoch), ``val_loss``
        and ``seconds`` for Keras Tuner to record."""
        if self.splits is None:
            raise ValueError("TransferHyperModel needs splits= to train on.")
        frozen_units = hp.Int("frozen_units", *self.frozen_range)
        learning_rate = hp.Choice("learning_rate", self.learning_rates)
        k = self.frozen_layers(hp.get("removed"), frozen_units)
        recipe = dataclasses.replace(self.recipe, frozen=k, fine_tune_learning_rate=learning_rate)
        if "epochs" in kwargs:  # Hyperband sets the budget; a continued trial skips the head stage
            initial = kwargs.get("initial_epoch", 0)
            recipe = dataclasses.replace(recipe, head_epochs=0 if initial else recipe.head_epochs,
                                         fine_tune_epochs=max(kwargs["epochs"] - initial, 1))
        start = time.perf_counter()
        with forget_custom_gradients():  # else every trial's traced graphs stay in memory
            # Keras Tuner's callbacks (its best-epoch checkpoint, which Hyperband continues from, and
            # the user's) see the classifier even when a stage fits its suffix on cached features
            histories = training.fine_tune(model, self.splits, recipe, strategy=self.strategy, cache=self.cache,
                                           callbacks=kwargs.get("callbacks"))
        seconds = time.perf_counter() - start
        last = histories.get("fine_tune") or histories.get("head") or {}
        if "val_accuracy" not in last:
            raise ValueError("tuning needs a validation split (val_accuracy): use a validation fraction > 0.")
        return {"val_accuracy": float(np.max(last["val_accuracy"])), "val_loss": float(np.min(last["val_loss"])),
                "seconds": seconds}


def fixed_hyperparameters(config: dict) -> keras_tuner.HyperParameters:
    """Hyperparameters holding ``config``'s values: ``build``/``fit`` read them instead of sampling."""
    hp = keras_tuner.HyperParameters()
    for name, value in config.items():
        hp.Fixed(name, value)
    return hp


def successive_halving(hypermodel: TransferHyperModel, configs: list[dict], budgets=((1, 1), (2, 3)),
                       keep: float = 1 / 3, on_trial=None, first_removed: int | None = None) -> list[dict]:
    """Successive halving (Jamieson & Talwalkar 2016) over explicit ``configs``: train every one
    on the first ``(head_epochs, fine_tune_epochs)`` budget, keep the best ``keep`` share (by
    validation accuracy) for the next budget, and so on. One budget: every configuration at
    that budget (a grid search).

    The first rung runs the ``removed`` values nearest ``first_removed`` (the probe's
    recommendation) first and, among equals, the shallowest frozen prefix first, so each
    deeper cut's cached features extend the one below (:class:`~keras_transfer.training.FeatureCache`).
    Returns one row per trial (the config, ``rung``, ``val_accuracy``, ``val_loss``, ``seconds``);
    ``on_trial(row)`` is called after each.
    """
    def order(c):
        distance = abs(c["removed"] - first_removed) if first_removed is not None else 0
        return distance, hypermodel.frozen_layers(c["removed"], c["frozen_units"])

    candidates = sorted(configs, key=order)
    rows, recipe = [], hypermodel.recipe
    try:
        for rung, (head_epochs, fine_tune_epochs) in enumerate(budgets):
            hypermodel.recipe = dataclasses.replace(recipe, head_epochs=head_epochs, fine_tune_epochs=fine_tune_epochs)
            scored = []
            for config in candidates:
                keras.backend.clear_session()
                hp = fixed_hyperparameters(config)
                row = {**config, "rung": rung, **hypermodel.fit(hp, hypermodel.build(hp))}
                rows.append(row)
                scored.append((row["val_accuracy"], -row["val_loss"], config))
                if on_trial:
                    on_trial(row)
                logger.info("rung %d (%d+%d epochs): %s -> val accuracy %.3f", rung, head_epochs, fine_tune_epochs,
                            config, row["val_accuracy"])
            scored.sort(key=lambda s: s[:2], reverse=True)
            candidates = [c for *_, c in scored[: max(1, int(np.ceil(len(scored) * keep)))]]
    finally:
        hypermodel.recipe = recipe
    return rows


def grid(hypermodel: TransferHyperModel) -> list[dict]:
    """Every distinct configuration of the hypermodel's space: (removed, frozen_units) pairs
    (equal frozen layer counts once) x widths x dropouts x learning rates."""
    seen, pairs = set(), []
    for removed in range(hypermodel.removed_range[0], hypermodel.removed_range[1] + 1):
        for frozen_units in range(hypermodel.frozen_range[0], hypermodel.frozen_range[1] + 1):
            key = (removed, hypermodel.frozen_layers(removed, frozen_units))
            if key not in seen:
                seen.add(key)
                pairs.append({"removed": removed, "frozen_units": frozen_units})
    return [{**pair, "width": w, "dropout": d, "learning_rate": lr} for pair in pairs for w in hypermodel.widths
            for d in hypermodel.dropouts for lr in hypermodel.learning_rates]


def halving_rows(hypermodel: TransferHyperModel, rows: list[dict]) -> list[dict]:
    """Successive-halving trials as result rows: the last rung's COMPLETED, earlier rungs STOPPED."""
    last = max(r["rung"] for r in rows)
    return [{"trial_id": f"{i:02d}", "status": "COMPLETED" if r["rung"] == last else "STOPPED",
             "frozen_layers": hypermodel.frozen_layers(r["removed"], r["frozen_units"]),
             "head": hypermodel.head_kinds[0], "message": f"rung {r['rung']}", **r} for i, r in enumerate(rows)]


def _grid_search(config: SearchConfig, hypermodel: TransferHyperModel, recipe, out_dir: str,
                 first_removed: int | None):
    """``tune --tuner grid`` (every configuration at the full budget) or ``halving`` (1+1 epochs,
    then the best third at the full budget) over the grid: at most ``trials`` configurations (a
    seeded sample if it is larger), the probe's ``first_removed`` first; ``(summary, best hyperparameters)``."""
    if len(hypermodel.head_kinds) > 1:
        raise ValueError(f"the {config.search.tuner} tuner searches one head; give one. "
                         f"Received: head_kinds={hypermodel.head_kinds}")
    configs = grid(hypermodel)
    if len(configs) > config.search.trials:
        order = np.random.default_rng(config.data.seed).permutation(len(configs))[: config.search.trials]
        configs = [configs[i] for i in sorted(order)]
    full = (recipe.head_epochs, recipe.fine_tune_epochs)
    budgets = ((1, 1), full) if config.search.tuner == "halving" else (full,)
    logger.info("%s over %d configurations", config.search.tuner, len(configs))
    rows = successive_halving(hypermodel, configs, budgets=budgets, first_removed=first_removed)
    summary = _summarise(halving_rows(hypermodel, rows), hypermodel, out_dir)
    keys = ("removed", "frozen_units", "width", "dropout", "learning_rate")
    return summary, fixed_hyperparameters({k: summary["best"][k] for k in keys})


def make_tuner(hypermodel: TransferHyperModel, kind: str = "random", directory: str = "search",
               project_name: str = "transfer", max_trials: int = 12, objective: str = "val_accuracy",
               overwrite: bool = False, seed: int = 0, max_epochs: int = 6) -> keras_tuner.Tuner:
    """A Keras Tuner tuner over ``hypermodel``; resumes an existing ``directory/project_name``.

    The same ``seed`` gives the same trials. (Keras Tuner reads a seed of 0 as "none" and draws
    a random one, ``seed or random.randint(...)``, so the oracle gets ``seed + 1``.)
    """
    common = dict(objective=keras_tuner.Objective(objective, "max" if "acc" in objective else "min"),
                  directory=directory, project_name=project_name, overwrite=overwrite, seed=seed + 1)
    if kind == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=max_trials, **common)
    if kind == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=max_trials, **common)
    if kind == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, factor=3, **common)
    raise ValueError(f"kind must be one of Keras Tuner's random, bayesian, hyperband (halving runs without Keras "
                     f"Tuner: successive_halving). Received: kind={kind!r}")


# ---- results ----------------------------------------------------------------------------

RESULT_COLUMNS = ("trial_id", "status", "removed", "frozen_units", "frozen_layers", "head", "width", "dropout",
                  "learning_rate", "val_accuracy", "val_loss", "seconds", "message")


def trial_rows(tuner: keras_tuner.Tuner, hypermodel: TransferHyperModel) -> list[dict]:
    """One row per trial (every status), in trial order."""
    rows = []
    for trial_id, trial in sorted(tuner.oracle.trials.items()):
        values = trial.hyperparameters.values
        metrics = {name: trial.metrics.get_best_value(name) for name in ("val_accuracy", "val_loss", "seconds")
                   if trial.metrics.exists(name)}
        removed, frozen_units = values.get("removed"), values.get("frozen_units")
        rows.append({
            "trial_id": trial_id, "status": trial.status, "removed": removed, "frozen_units": frozen_units,
            "frozen_layers": hypermodel.frozen_layers(removed, frozen_units) if None not in (removed, frozen_units) else None,
            "head": values.get("head", hypermodel.head_kinds[0]), "width": values.get("width"),
            "dropout": values.get("dropout", hypermodel.dropouts[0]), "learning_rate": values.get("learning_rate"),
            **metrics, "message": (trial.message or "").strip().splitlines()[-1][:200] if trial.message else "",
        })
    return rows


def write_results(rows: list[dict], out_dir: str) -> dict:
    """``results.csv`` and ``heatmap.png`` in ``out_dir``; returns the best completed row (ties: :func:`_preference`)."""
    from keras_transfer import plots
    from keras_transfer.files import atomic_path

    with atomic_path(os.path.join(out_dir, "results.csv")) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    done = [r for r in rows if r["status"] == "COMPLETED" and r.get("val_accuracy") is not None]
    if not done:
        return {}
    cells: dict[tuple[int, int], float] = {}
    for r in done:
        key = (r["removed"], r["frozen_units"])
        cells[key] = max(cells.get(key, -np.inf), r["val_accuracy"])
    plots.heatmap(cells, os.path.join(out_dir, "heatmap.png"), x_label="frozen units (0 = none; top = all)",
                  y_label="removed units", title="best validation accuracy per (removed, frozen)")
    return max(done, key=_preference)


def _preference(row: dict) -> tuple:
    """Best validation accuracy; among equals (common on a few dozen validation images) the
    cheaper setting: more units removed (a smaller model), then more frozen (less to train)."""
    return row["val_accuracy"], row["removed"], row["frozen_units"], -row.get("val_loss", 0.0)


def format_top(rows: list[dict], n: int = 5) -> str:
    done = sorted((r for r in rows if r["status"] == "COMPLETED"), key=lambda r: -r["val_accuracy"])[:n]
    lines = [f"{'trial':>6} {'removed':>7} {'frozen':>6} {'k':>4} {'width':>5} {'drop':>4} {'lr':>7} {'val_acc':>7} {'s':>6}"]
    for r in done:
        lines.append(f"{r['trial_id']:>6} {r['removed']:>7} {r['frozen_units']:>6} {r['frozen_layers']:>4} "
                     f"{r['width']:>5} {r['dropout']:>4} {r['learning_rate']:>7.0e} {r['val_accuracy']:>7.3f} "
                     f"{r.get('seconds', float('nan')):>6.1f}")
    return "\n".join(lines)


# ---- the tune command ---------------------------------------------------------------------

def _removed_range(config: SearchConfig, splits, size: int, out_dir: str):
    """``(removed range, the probe's recommendation)``: ``config.search.removed_range`` and None, or
    with ``"auto"`` the probe's recommendation +-1 unit (every process of a distributed search
    computes the same one from the same data)."""
    if config.search.removed_range != "auto":
        return config.search.removed_range, None
    from keras_transfer import probe

    base = build_base(config.model.backbone, weights=config.model.weights, input_shape=(size, size, 3))
    result = probe.probe_cuts(base, splits.train.images, splits.train.labels, splits.class_names, out_dir,
                              seed=config.data.seed, batch_size=config.recipe.batch_size)
    best, top = result["recommended_removed"], len(result["cuts"]) - 1
    logger.info("removed range auto: the probe recommends %d; searching %d:%d", best, max(0, best - 1), min(top, best + 1))
    return (max(0, best - 1), min(top, best + 1)), best


def search(config: SearchConfig, out_dir: str, verbose: int = 1) -> dict:
    """Run (or resume, or join as a distributed worker) a search; on the chief write
    ``results.csv``, ``heatmap.png``, ``best.json`` and retrain + export the best trial.
    Models compute in ``config.distribute.precision`` (the global Keras policy is restored afterwards)."""
    from keras_transfer import precision

    with precision.using(config.distribute.precision):
        return _search(config, out_dir, verbose)


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
    return {"best": best, "trials": len(rows), "failed": len(failed), "cache_hits": hypermodel.cache.hits,
            "cache_misses": hypermodel.cache.misses}


def _retrain_best(hp, hypermodel: TransferHyperModel, best: dict, splits, recipe, config: SearchConfig,
                  out_dir: str, verbose: int) -> dict:
    """Retrain the best trial (its hyperparameters ``hp``) on the train split, test it, export it;
    returns what the summary gains."""
    from keras_transfer import export

    logger.info(f"retraining the best trial ({best['trial_id']}) on the train split; testing on the test split")
    model = hypermodel.build(hp)
    k = hypermodel.frozen_layers(hp.get("removed"), hp.get("frozen_units"))
    final = dataclasses.replace(recipe, frozen=k, fine_tune_learning_rate=hp.get("learning_rate"), verbose=verbose)
    training.fine_tune(model, splits, final, strategy=hypermodel.strategy, cache=hypermodel.cache)
    from keras_transfer.precision import as_float32

    served = as_float32(model)  # the export computes in float32: test what is served
    metrics = training.test_scores(served, splits)
    path = export.export(served, os.path.join(out_dir, "export"), splits.class_names,
                         {"backbone": config.model.backbone, "best_trial": best})
    tested = "no test images" if metrics["accuracy"] is None else f"test accuracy {metrics['accuracy']:.3f}"
    logger.info(f"best model: {tested}; exported to {path}")
    return {"test_accuracy": metrics["accuracy"], "export": path}


def _keras_tuner_search(config: SearchConfig, hypermodel: TransferHyperModel, out_dir: str, verbose: int):
    """Run (or resume, or join) the Keras Tuner search; ``(summary, best hyperparameters)``, or
    ``({}, None)`` in a distributed worker."""
    tuner = make_tuner(hypermodel, config.search.tuner, directory=out_dir, project_name="trials",
                       max_trials=config.search.trials, seed=config.data.seed,
                       max_epochs=config.recipe.epochs + config.recipe.fine_tune_epochs)
    is_worker = tuner_is_worker()
    resumed = 0 if is_worker else len(tuner.oracle.trials)  # a worker's oracle is a remote client
    if resumed:
        logger.info(f"resuming the search in {out_dir}: {resumed} trial(s) kept")
    tuner.search(verbose=verbose)
    if is_worker:
        logger.info(f"tuner {os.environ.get('KERASTUNER_TUNER_ID', '')}: no trials left, done")
        return {}, None
    summary = _summarise(trial_rows(tuner, hypermodel), hypermodel, out_dir)
    return summary, tuner.oracle.get_trial(summary["best"]["trial_id"]).hyperparameters


SEARCH_FILE = "search.json"
# settings a resumed search may change: where and how precisely it computes, how many trials
_MAY_CHANGE_ON_RESUME = ("distribute", "search.trials", "search.retrain_best", "recipe.verbose")


def check_search_dir(out_dir: str, config: SearchConfig) -> bool:
    """Whether ``out_dir`` holds this search to resume (True) or is free for a new one (False);
    raises if it holds anything else, or a search started with other settings. Writes nothing."""
    from keras_transfer import folders
    from keras_transfer.files import read_json

    saved = read_json(os.path.join(out_dir, SEARCH_FILE))
    if saved is None:
        if folders.contents(out_dir):
            raise FileExistsError(f"{out_dir!r} is a non-empty folder that is not a keras-transfer search; choose "
                                  f"another --out (nothing was overwritten). Received: out={out_dir!r}")
        return False
    if not _has_trials(out_dir):
        return False  # an earlier command stopped before any trial: nothing to keep
    changed = folders.settings_changes(saved, dataclasses.asdict(config), _MAY_CHANGE_ON_RESUME)
    if changed:
        was, now = folders.describe_changes(changed)
        raise ValueError(f"tune: {out_dir!r} holds a search started with {was}; run the same command to resume "
                         f"it (only --trials may change) or choose another --out. Received: {now}")
    return True


def _has_trials(out_dir: str) -> bool:
    trials = os.path.join(out_dir, "trials")
    return os.path.exists(os.path.join(out_dir, "results.csv")) or (
        os.path.isdir(trials) and any(name.startswith("trial_") for name in os.listdir(trials)))


def _start_search_dir(out_dir: str, config: SearchConfig, splits, resuming: bool) -> None:
    """Check the data a resumed search started with; record settings and data for the next run
    (a new search first clears what an earlier command that ran no trial left)."""
    import shutil

    from keras_transfer import folders
    from keras_transfer.files import write_json

    if not resuming:
        shutil.rmtree(os.path.join(out_dir, "trials"), ignore_errors=True)  # Keras Tuner would reload its oracle

    fingerprint = folders.data_fingerprint(splits)
    if resuming:
        folders.check_same_data(out_dir, fingerprint, "tune", "Its trials were scored on other images")
    write_json(os.path.join(out_dir, SEARCH_FILE), dataclasses.asdict(config))
    write_json(os.path.join(out_dir, folders.DATA_FILE), fingerprint)


def _search(config: SearchConfig, out_dir: str, verbose: int) -> dict:
    from keras_transfer import folders

    if tuner_is_worker():  # a distributed worker: the chief's oracle owns the folder
        return _search_in(config, out_dir, verbose, resuming=True)
    with folders.locked(out_dir, "keras-transfer tune"):
        return _search_in(config, out_dir, verbose, check_search_dir(out_dir, config))


def _search_in(config: SearchConfig, out_dir: str, verbose: int, resuming: bool) -> dict:
    from keras_transfer import distribute
    from keras_transfer.files import write_json

    strategy = distribute.strategy_for(config.distribute.strategy, config.distribute.devices)
    size = config.data.size(config.model.backbone)
    splits = config.data.load(config.model.backbone, progress=verbose > 0)
    logger.info(splits.summary())
    if not tuner_is_worker():
        _start_search_dir(out_dir, config, splits, resuming)
    os.makedirs(out_dir, exist_ok=True)
    data_lib.write_skipped_report(splits.skipped, os.path.join(out_dir, "skipped.csv"))
    for s in splits.skipped:
        logger.warning(f"  skipped {s.path}: {s.reason}")
    recipe = dataclasses.replace(config.recipe.make(config.data.seed), verbose=0)
    removed_range, recommended = _removed_range(config, splits, size, out_dir)
    hypermodel = TransferHyperModel(config.model.backbone, splits.num_classes, splits, weights=config.model.weights,
                                    input_size=size, removed_range=removed_range,
                                    frozen_range=config.search.frozen_range, widths=config.search.widths,
                                    dropouts=config.search.dropouts, learning_rates=config.search.learning_rates,
                                    head_kinds=config.search.head_kinds, recipe=recipe, strategy=strategy)
    os.makedirs(out_dir, exist_ok=True)
    if config.search.tuner in ("grid", "halving"):
        summary, hp = _grid_search(config, hypermodel, recipe, out_dir, recommended)
    else:
        summary, hp = _keras_tuner_search(config, hypermodel, out_dir, verbose)
        if not summary:
            return {}  # a distributed worker: the chief reports
    if config.search.retrain_best:
        summary.update(_retrain_best(hp, hypermodel, summary["best"], splits, recipe, config, out_dir, verbose))
    write_json(os.path.join(out_dir, "best.json"), summary)
    return summary
