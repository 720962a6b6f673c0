"""A search folder defends itself: ``search.json`` and ``data.json`` record the settings and the
images a search started with; it resumes only with the same (``--trials`` may grow), and a folder
holding anything else is refused."""

from __future__ import annotations

import dataclasses
import os
import shutil

from keras_transfer._utils.atomic_files import read_json, write_json
from keras_transfer.runs import run_folders
from keras_transfer.runs.config import SearchConfig

SEARCH_FILE = "search.json"
# settings a resumed search may change: where and how precisely it computes, how many trials
_MAY_CHANGE_ON_RESUME = ("distribute", "search.trials", "search.retrain_best", "recipe.verbose", "recipe.tensorboard")


def check_search_dir(out_dir: str, config: SearchConfig) -> bool:
    """Whether ``out_dir`` holds this search to resume (True) or is free for a new one (False);
    raises if it holds anything else, or a search started with other settings. Writes nothing."""
    saved = read_json(os.path.join(out_dir, SEARCH_FILE))
    if saved is None:
        if run_folders.contents(out_dir):
            raise FileExistsError(f"{out_dir!r} is a non-empty folder that is not a keras-transfer search; choose "
                                  f"another --out (nothing was overwritten). Received: out={out_dir!r}")
        return False
    if not _has_trials(out_dir):
        return False  # an earlier command stopped before any trial: nothing to keep
    changed = run_folders.settings_changes(saved, config, _MAY_CHANGE_ON_RESUME)
    if changed:
        was, now = run_folders.describe_changes(changed)
        raise ValueError(f"tune: {out_dir!r} holds a search started with {was}; run the same command to resume "
                         f"it (only --trials may change) or choose another --out. Received: {now}")
    return True


def _has_trials(out_dir: str) -> bool:
    trials = os.path.join(out_dir, "trials")
    return os.path.exists(os.path.join(out_dir, "results.csv")) or (
        os.path.isdir(trials) and any(name.startswith("trial_") for name in os.listdir(trials)))


def start_search_dir(out_dir: str, config: SearchConfig, splits, resuming: bool) -> None:
    """Check the data a resumed search started with; record settings and data for the next run
    (a new search first clears what an earlier command that ran no trial left)."""
    if not resuming:
        shutil.rmtree(os.path.join(out_dir, "trials"), ignore_errors=True)  # Keras Tuner would reload its oracle
    fingerprint = run_folders.data_fingerprint(splits)
    if resuming:
        run_folders.check_same_data(out_dir, fingerprint, "tune", "Its trials were scored on other images")
    write_json(os.path.join(out_dir, SEARCH_FILE), dataclasses.asdict(config))
    write_json(os.path.join(out_dir, run_folders.DATA_FILE), fingerprint)


