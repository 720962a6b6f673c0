"""Search strategies as Keras Tuner Oracles, so every search resumes and distributes alike.

- :class:`GridOracle` (``--tuner grid``): every configuration of the space once, the default
  recipe's first, then the probe's ``removed`` nearest first and, within it, the shallowest
  frozen prefix first, so each deeper cut's cached features extend the one below.
- :class:`HalvingOracle` (``--tuner halving``): successive halving (Jamieson & Talwalkar 2016)
  over the same ordered configurations: all at the first budget, the best ``keep`` share at the
  next; a rung starts once every trial of the one before has ended.
- :func:`default_first`: Keras Tuner's random and Bayesian oracles, whose first trial is the
  default recipe (the point of the space every hyperparameter's default names).

Their state is the trials Keras Tuner saves (``trials/trial_*/trial.json``): a killed search run
again reloads them, reruns the trial that was running and goes on; under Keras Tuner's
``KERASTUNER_*`` variables the chief serves the oracle and the workers run its trials.
"""

from __future__ import annotations

import datetime
import os
import time

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module
from keras_tuner.src.engine.oracle import Display

from keras_transfer._utils.atomic_files import write_json
from keras_transfer.tuning.hypermodel import FINE_TUNE_EPOCHS, HEAD_EPOCHS, RUNG, TransferHyperModel

KEYS = ("removed", "frozen_units", "width", "dropout", "learning_rate", "head")


def configurations(hypermodel: TransferHyperModel, limit: int | None = None, seed: int = 0) -> list[dict]:
    """Every distinct configuration of the space (equal frozen layer counts once), in the order
    the grid trains them (see the module docstring); at most ``limit`` (a seeded sample that
    keeps the default recipe's). ``head`` is a key only when the space offers several."""
    hm = hypermodel
    heads = hm.head_kinds if len(hm.head_kinds) > 1 else [None]
    seen, configs = set(), []
    for removed in range(hm.removed_range[0], hm.removed_range[1] + 1):
        for frozen_units in range(hm.frozen_range[0], hm.frozen_range[1] + 1):
            if (removed, hm.frozen_layers(removed, frozen_units)) in seen:
                continue
            seen.add((removed, hm.frozen_layers(removed, frozen_units)))
            configs += [{"removed": removed, "frozen_units": frozen_units, "width": w, "dropout": dr,
                         "learning_rate": lr, **({"head": head} if head else {})}
                        for w in hm.widths for dr in hm.dropouts for lr in hm.learning_rates for head in heads]

    def resolved(c):
        return _key({**c, "frozen_units": hm.frozen_layers(c["removed"], c["frozen_units"])})

    default = resolved({k: v for k, v in hm.defaults().items() if k != "head" or heads != [None]})
    first = [c for c in configs if resolved(c) == default][:1]
    rest = [c for c in configs if c not in first]
    if limit is not None and len(first) + len(rest) > limit:
        keep = np.random.default_rng(seed).permutation(len(rest))[: max(limit - len(first), 0)]
        rest = [rest[i] for i in sorted(keep)]
    rest.sort(key=lambda c: (abs(c["removed"] - hm.default_removed), hm.frozen_layers(c["removed"], c["frozen_units"])))
    return (first + rest)[:limit] if limit is not None else first + rest


def _config_of(trial) -> tuple:
    values = trial.hyperparameters.values
    return tuple(values.get(k) for k in KEYS) + (values.get(RUNG, 0),)


def _key(config: dict, rung: int = 0) -> tuple:
    return tuple(config.get(k) for k in KEYS) + (rung,)


class TrialIdDisplay(Display):
    """Keras Tuner's progress lines, naming a trial by its id (``02``: its folder ``trial_02``, its
    row in ``results.csv`` and the summary) rather than a count ("Trial #3") that is not."""

    def on_trial_begin(self, trial):
        if self.verbose < 1:
            return
        now = datetime.datetime.now()
        self.trial_start[trial.trial_id] = now
        self.search_start = self.search_start or now
        self.trial_number[trial.trial_id] = trial.trial_id  # what on_trial_end prints: "Trial 02 Complete"
        print(f"\nSearch: running trial {trial.trial_id}\n")
        self.show_hyperparameter_table(trial)
        print()


def name_trials_by_id(oracle) -> None:
    """Give ``oracle`` the :class:`TrialIdDisplay` (keeping its verbosity)."""
    verbose = oracle._display.verbose
    oracle._display = TrialIdDisplay(oracle=oracle)
    oracle._display.verbose = verbose


class AtomicSaves:
    """Mixed into an Oracle. Keras Tuner writes ``oracle.json`` and every ``trial.json`` in place,
    so a search killed mid-write would leave a file the next run cannot reload: these write each
    file whole or not at all. (Its progress lines name trials by id: :class:`TrialIdDisplay`.)"""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        name_trials_by_id(self)

    def save(self):
        write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())


def atomic(oracle_class):
    """``oracle_class`` with :class:`AtomicSaves`."""
    return type(f"Atomic{oracle_class.__name__}", (AtomicSaves, oracle_class), {})


class GridOracle(AtomicSaves, keras_tuner.Oracle):
    """Every configuration in ``configs`` once, in order (see :func:`configurations`)."""

    def __init__(self, configs: list[dict], **kwargs):
        super().__init__(max_trials=len(configs), **kwargs)
        self.configs = [dict(c) for c in configs]

    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        if trial.status == trial_module.TrialStatus.IDLE:
            time.sleep(0.5)  # Keras Tuner asks again at once; outside the oracle's lock, so others report meanwhile
        return trial

    def populate_space(self, trial_id):
        tried = {_config_of(t) for t in self.trials.values()}
        for config in self.configs:
            if _key(config) not in tried:
                return {"status": trial_module.TrialStatus.RUNNING, "values": dict(config)}
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}


class HalvingOracle(GridOracle):
    """Successive halving over ``configs``: every one at ``budgets[0]`` (``(head_epochs,
    fine_tune_epochs)``), the best ``keep`` share of each rung (validation accuracy, then loss)
    at the next budget."""

    def __init__(self, configs: list[dict], budgets=((1, 1), (2, 3)), keep: float = 1 / 3, **kwargs):
        self.budgets, self.keep = [tuple(b) for b in budgets], float(keep)
        sizes = [len(configs)]
        for _ in self.budgets[1:]:
            sizes.append(max(1, int(np.ceil(sizes[-1] * self.keep))))
        super().__init__(configs, **kwargs)
        self.max_trials = sum(sizes)

    def _rung_values(self, config: dict, rung: int) -> dict:
        head_epochs, fine_tune_epochs = self.budgets[rung]
        return {**config, RUNG: rung, HEAD_EPOCHS: head_epochs, FINE_TUNE_EPOCHS: fine_tune_epochs}

    def populate_space(self, trial_id):
        by_key = {_config_of(t): t for t in self.trials.values()}
        candidates = self.configs
        for rung in range(len(self.budgets)):
            for config in candidates:
                if _key(config, rung) not in by_key:
                    return {"status": trial_module.TrialStatus.RUNNING, "values": self._rung_values(config, rung)}
            trials = [by_key[_key(c, rung)] for c in candidates]
            if any(t.status in (trial_module.TrialStatus.RUNNING, trial_module.TrialStatus.IDLE) for t in trials):
                return {"status": trial_module.TrialStatus.IDLE, "values": None}  # wait for the rung to end
            scored = [(t.score, -t.metrics.get_best_value("val_loss") if t.metrics.exists("val_loss") else 0.0, i)
                      for i, t in enumerate(trials) if t.status == trial_module.TrialStatus.COMPLETED
                      and t.score is not None]
            scored.sort(reverse=True)
            n = max(1, int(np.ceil(len(candidates) * self.keep)))
            candidates = [candidates[i] for *_, i in sorted(scored[:n], key=lambda s: s[2])]
            if not candidates:
                break
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}


def default_first(oracle_class):
    """``oracle_class`` whose first trial is the space's defaults (the default recipe), saved
    atomically (:class:`AtomicSaves`)."""

    class DefaultFirst(AtomicSaves, oracle_class):
        def populate_space(self, trial_id):
            if not self.trials:
                hps = self.hyperparameters
                values = {hp.name: hp.default for hp in hps.space if hps.is_active(hp)}
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
            return super().populate_space(trial_id)

    DefaultFirst.__name__ = DefaultFirst.__qualname__ = f"DefaultFirst{oracle_class.__name__}"
    return DefaultFirst
