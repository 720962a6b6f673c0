import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest

from helpers import free_port, wait_for_port
from keras_transfer import data, training, tuning

HERE = os.path.dirname(__file__)


def _splits(n=24, size=32):
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype("int32")
    x = np.clip(rng.normal(70 + 100 * y[:, None, None, None], 30, (n, size, size, 3)), 0, 255).astype("uint8")
    return data.split(data.ImageSet(x, y, ["a", "b"]), 0.25, 0.0)


def _hypermodel(**kw):
    recipe = training.Recipe(head_epochs=1, fine_tune_epochs=1, batch_size=8, verbose=0, patience=None)
    return tuning.TransferHyperModel("vgg16", 2, _splits(), weights=None, input_size=32, widths=(8,),
                                     recipe=recipe, **kw)


def test_search_space_is_declared_where_it_is_used():
    hm = _hypermodel(removed_range=(0, 3))
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    assert set(hp.values) == {"removed", "width", "dropout"}  # frozen and lr are declared in fit
    assert hp.get("removed") == 0 and model.optimizer is not None
    assert hm.max_frozen_units == 14


def test_frozen_units_map_to_unit_boundaries():
    hm = _hypermodel(removed_range=(0, 3))
    assert hm.frozen_layers(0, 0) == 0                       # none frozen
    assert hm.frozen_layers(0, 1) == 2                       # through block1_conv1
    assert hm.frozen_layers(3, 8) == 12                      # through block4_conv1
    assert hm.frozen_layers(3, 11) == 15                     # past the last unit left: all frozen
    assert hm.frozen_layers(0, 14) == 19


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="removed range 0:13 must lie in 0:12"):
        _hypermodel(removed_range=(0, 13))
    with pytest.raises(ValueError, match="Received: kind='grid'"):
        tuning.make_tuner(_hypermodel(), "grid")
    with pytest.raises(ValueError, match="a:b"):
        tuning.parse_range("one")
    with pytest.raises(ValueError, match=r"Received: frozen_range=\(0, 15\)"):
        _hypermodel(removed_range=(0, 3), frozen_range=(0, 15))
    assert _hypermodel(removed_range=(0, 3), frozen_range=(10, 14)).frozen_range == (10, 14)


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])
def test_every_trial_completes_and_results_are_written(kind, tmp_path):
    """Keras Tuner logs a failed trial and returns normally; this catches that (e.g. the
    missing-tensorboard failure of keras-tuner 1.4.8 on TF 2.21)."""
    hm = _hypermodel(removed_range=(0, 2))
    tuner = tuning.make_tuner(hm, kind, str(tmp_path), max_trials=3, max_epochs=2)
    tuner.search(verbose=0)
    rows = tuning.trial_rows(tuner, hm)
    assert rows and all(r["status"] == "COMPLETED" for r in rows), [r["message"] for r in rows]
    assert all(0 <= r["val_accuracy"] <= 1 and r["seconds"] > 0 for r in rows)
    best = tuning.write_results(rows, str(tmp_path))
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in rows)
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(tuning.RESULT_COLUMNS) <= set(table[0])
    assert (tmp_path / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    assert "val_acc" in tuning.format_top(rows)


def test_the_same_seed_gives_the_same_trials(tmp_path):
    """Keras Tuner takes seed=0 as "no seed"; our default seed is 0 and must still repeat."""
    import random

    def first_trials(name):
        random.seed(name)  # whatever else the process has done with the global random state
        oracle = tuning.make_tuner(_hypermodel(removed_range=(0, 3)), "random", str(tmp_path), project_name=name,
                                   max_trials=5, seed=0).oracle
        return [oracle.create_trial(f"t{i}").hyperparameters.values for i in range(5)]

    assert first_trials("a") == first_trials("b")


def test_trials_share_frozen_prefix_features():
    hm = _hypermodel(removed_range=(1, 1))
    for frozen_units in (12, 12):  # the same (removed, frozen) twice: second trial computes nothing
        hp = keras_tuner.HyperParameters()
        hp.Fixed("removed", 1)
        hp.Fixed("frozen_units", frozen_units)
        hp.Fixed("learning_rate", 1e-3)
        hm.fit(hp, hm.build(hp))
    assert hm.cache.misses == 4 and hm.cache.hits >= 4  # (head, fine-tune) x (train, val), in the first trial only


def _tune_cmd(data_dir, out, trials):
    return [sys.executable, "-m", "keras_transfer", "tune", "--data", str(data_dir), "--backbone", "vgg16",
            "--weights", "none", "--input-size", "32", "--trials", str(trials), "--epochs", "1",
            "--fine-tune-epochs", "2", "--widths", "8", "--batch-size", "4", "--removed-range", "0:3",
            "--no-retrain", "--out", str(out)]


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.path.dirname(HERE)}
    for k in ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "TF_CONFIG"):
        env.pop(k, None)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def guitars(tmp_path_factory):
    return data.sample_guitars(str(tmp_path_factory.mktemp("tune") / "g"), n_per_class=6, seed=0, size=40)


def _trial_states(out):
    states = {}
    for path in glob.glob(os.path.join(out, "trials", "trial_*", "trial.json")):
        with open(path) as f:
            trial = json.load(f)
        states[trial["trial_id"]] = (trial["status"], json.dumps(trial["hyperparameters"]["values"], sort_keys=True))
    return states


@pytest.mark.slow
def test_a_search_killed_mid_trial_resumes_and_keeps_finished_trials(guitars, tmp_path):
    out = tmp_path / "search"
    proc = subprocess.Popen(_tune_cmd(guitars, out, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 300
    try:
        while time.time() < deadline:  # SIGKILL once one trial is finished and the next one is running
            states = _trial_states(out)
            if sum(s == "COMPLETED" for s, _ in states.values()) >= 1 and any(s == "RUNNING" for s, _ in states.values()):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    before = {k: v for k, v in _trial_states(out).items() if v[0] == "COMPLETED"}
    assert before, "no trial finished before the kill"
    again = subprocess.run(_tune_cmd(guitars, out, 4), capture_output=True, text=True, timeout=400, env=_env())
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming the search" in again.stdout
    after = _trial_states(out)
    for trial_id, state in before.items():
        assert after[trial_id] == state, "a finished trial must be kept as it was"
    assert sum(s == "COMPLETED" for s, _ in after.values()) == 4
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4


@pytest.mark.slow
def test_distributed_search_chief_and_two_workers_finish_by_themselves(guitars, tmp_path):
    out = tmp_path / "dist"
    port = free_port()
    procs = {}
    start = time.time()
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = _env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        procs[tuner_id] = subprocess.Popen(_tune_cmd(guitars, out, 4), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, env=env)
        if tuner_id == "chief":
            wait_for_port(port, procs["chief"])  # the workers need the chief's oracle listening
    outs = {}
    try:
        for tuner_id, p in procs.items():
            outs[tuner_id] = p.communicate(timeout=400)[0]  # every process is bounded
    finally:
        for p in procs.values():
            p.kill()
    seconds = time.time() - start
    assert {t: p.returncode for t, p in procs.items()} == {"chief": 0, "tuner0": 0, "tuner1": 0}, \
        {t: o[-1500:] for t, o in outs.items()}
    done = [sum(line.startswith("[head]") for line in outs[w].splitlines()) for w in ("tuner0", "tuner1")]
    assert sum(done) == 4, "the workers run every trial; the chief only serves the oracle"
    assert not any(line.startswith("[head]") for line in outs["chief"].splitlines())
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(r["status"] == "COMPLETED" for r in rows)
    assert "top trials" in outs["chief"]
    print(f"distributed search: 4 trials in {seconds:.1f} s, trials per worker {done}")


_TRIAL_CALLS = []


class _TrialSpy(keras.callbacks.Callback):
    """Keras Tuner deep-copies search callbacks, so calls are recorded in a module list."""

    def on_epoch_end(self, epoch, logs=None):
        _TRIAL_CALLS.append((self.model.name, tuple(self.model.input_shape), "val_accuracy" in (logs or {})))


def test_keras_tuner_callbacks_run_in_trials_and_see_the_classifier(tmp_path):
    _TRIAL_CALLS.clear()
    tuner = tuning.make_tuner(_hypermodel(removed_range=(0, 1)), "random", directory=str(tmp_path), max_trials=2)
    tuner.search(callbacks=[_TrialSpy()], verbose=0)
    assert len(_TRIAL_CALLS) == 2 * 2  # 2 trials x (1 head + 1 fine-tuning epoch)
    assert all(shape == (None, 32, 32, 3) and has_val for _, shape, has_val in _TRIAL_CALLS)
    assert glob.glob(os.path.join(str(tmp_path), "transfer", "trial_*", "checkpoint.weights.h5"))  # its best-epoch save


def test_successive_halving_trains_the_best_share_longer():
    hm = _hypermodel(removed_range=(0, 2))
    configs = [{"removed": r, "frozen_units": hm.n_units - r} for r in (0, 1, 2)]
    built = []
    original_build = hm.build
    hm.build = lambda hp: built.append(hp.get("removed")) or original_build(hp)
    rows = tuning.successive_halving(hm, configs, budgets=((1, 1), (1, 2)), keep=1 / 3, first_removed=1)
    assert [r["rung"] for r in rows] == [0, 0, 0, 1]
    assert built == [r["removed"] for r in rows]  # each trial built the configuration it reports
    # the probe's removed first, then the shallowest frozen prefix first (here: more removed)
    assert built[:3] == [1, 2, 0]
    first = max(rows[:3], key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert (rows[-1]["removed"], rows[-1]["frozen_units"]) == (first["removed"], first["frozen_units"])
    assert hm.recipe.fine_tune_epochs == 1  # the hypermodel's own recipe is given back


def test_tune_grid_trains_every_configuration_the_probes_removed_first(guitars, tmp_path, monkeypatch):
    from keras_transfer.cli import main

    # a random-weight probe recommends anything; say it recommended 2 (range 1:3, cut to 1:2 here)
    monkeypatch.setattr(tuning, "_removed_range", lambda *args: ((1, 2), 2))
    out = tmp_path / "grid"
    argv = ["tune", "--data", str(guitars), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--epochs", "1", "--fine-tune-epochs", "1", "--widths", "8", "--dropouts", "0.0",
            "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "auto", "--frozen-range", "11:13",
            "--no-retrain", "--out", str(out)]
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["COMPLETED"] * len(rows)
    pairs = [(int(r["removed"]), int(r["frozen_units"])) for r in rows]
    assert pairs[0][0] == 2 and {p[0] for p in pairs} == {1, 2}  # the recommendation first, then the rest
    assert sorted(pairs) == [(1, 11), (1, 12), (2, 11)]  # frozen 12, 13 at removed 2 = all frozen = (2, 11)


def test_tune_halving_trains_the_best_third_longer_and_exports_the_winner(guitars, tmp_path):
    from keras_transfer.cli import main

    out = tmp_path / "halving"
    argv = ["tune", "--data", str(guitars), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "halving", "--trials", "6", "--epochs", "1", "--fine-tune-epochs", "2", "--widths", "8",
            "--dropouts", "0.0", "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "1:2",
            "--frozen-range", "9:13", "--out", str(out)]
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["STOPPED"] * 6 + ["COMPLETED"] * 2  # 6 at 1+1 epochs, the best third on
    stopped = sorted(rows[:6], key=lambda r: (-float(r["val_accuracy"]), float(r["val_loss"])))
    promoted = {(r["removed"], r["frozen_units"]) for r in rows[6:]}
    assert (stopped[0]["removed"], stopped[0]["frozen_units"]) in promoted
    best = json.load(open(out / "best.json"))
    assert best["best"]["status"] == "COMPLETED" and os.listdir(out / "export") == ["1"]


def test_a_search_folder_resumes_only_the_same_search_and_refuses_anything_else(guitars, tmp_path, capsys):
    """tune never writes over a user's files, never 'resumes' a search on other data or other
    settings, and says which; it writes skipped.csv (the folder's files are the package's)."""
    import shutil

    from keras_transfer.cli import main

    data_dir = tmp_path / "g"
    shutil.copytree(guitars, data_dir)
    (data_dir / "sg" / "broken.jpg").write_text("not an image")
    argv = ["tune", "--data", str(data_dir), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--epochs", "1", "--fine-tune-epochs", "0", "--widths", "8", "--dropouts", "0.0",
            "--learning-rates", "0.001", "--batch-size", "8", "--removed-range", "3:3", "--frozen-range", "11:11",
            "--no-retrain"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("my own results\n")
    assert main(argv + ["--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert "is a non-empty folder that is not a keras-transfer search" in err and "Traceback" not in err
    assert os.listdir(mine) == ["results.csv"] and (mine / "results.csv").read_text() == "my own results\n"

    out = tmp_path / "search"
    mistyped = [a if a != "11:11" else "13:13" for a in argv]
    assert main(mistyped + ["--out", str(out)]) == 2  # found after the data: a search that ran no trial
    assert "frozen_range must lie in 0:11" in capsys.readouterr().err
    assert main(argv + ["--out", str(out)]) == 0  # so the corrected command starts there
    with open(out / "skipped.csv") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [str(data_dir / "sg" / "broken.jpg")]
    results = (out / "results.csv").read_text()
    capsys.readouterr()
    other = [a if a != "32" else "40" for a in argv]
    assert main(other + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds a search started with data.input_size=32" in err and "Received: data.input_size=40" in err
    (data_dir / "sg" / "more.png").write_bytes((data_dir / "sg" / os.listdir(data_dir / "sg")[0]).read_bytes())
    assert main(argv + ["--out", str(out)]) == 2
    assert f"tune: the data changed since {str(out)!r} started: 1 image(s) added" in capsys.readouterr().err
    assert (out / "results.csv").read_text() == results  # nothing was overwritten
    os.remove(data_dir / "sg" / "more.png")
    assert main(argv + ["--out", str(out), "--trials", "20"]) == 0  # the same search, more trials: resumes
