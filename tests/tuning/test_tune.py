import csv
import dataclasses
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
from keras_transfer.models import heads
from keras_transfer.models.surgery import backbone_of
from keras_transfer.runs import config

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(HERE)))  # the repository


def _splits(n=24, size=32):
    rng = np.random.default_rng(0)
    y = (np.arange(n) % 2).astype("int32")
    x = np.clip(rng.normal(70 + 100 * y[:, None, None, None], 30, (n, size, size, 3)), 0, 255).astype("uint8")
    return data.split(data.ImageSet(x, y, ["a", "b"]), 0.25, 0.0)


def _hypermodel(**kw):
    recipe = kw.pop("recipe", None) or training.Recipe(head_epochs=1, fine_tune_epochs=1, batch_size=8, verbose=0,
                                                         patience=None)
    fields = {f.name for f in dataclasses.fields(tuning.SearchSpace)}
    space = tuning.SearchSpace(**{"widths": (8,), **{k: v for k, v in kw.items() if k in fields}})
    return tuning.TransferHyperModel("vgg16", 2, recipe, space, weights=None, input_size=32,
                                     **{k: v for k, v in kw.items() if k not in fields})


def test_the_space_is_declared_in_build_and_its_defaults_are_the_default_recipe():
    hm = _hypermodel(removed_range=(0, 3), widths=(0, 256), dropouts=(0.2, 0.5), learning_rates=(1e-3, 1e-4))
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    assert set(hp.values) == {"removed", "frozen_units", "width", "dropout", "learning_rate"}
    assert model.optimizer is not None and hm.max_frozen_units == 14
    # the default recipe as `train` runs it: a linear head, dropout 0.2, fine-tuning at 1e-4,
    # all but the top two units frozen (VGG16: through block5_conv1 = 11 of 13)
    assert hp.values == {"removed": 0, "frozen_units": 11, "width": 0, "dropout": 0.2, "learning_rate": 1e-4}
    assert tuning.TransferHyperModel("vgg16", 2, space=tuning.SearchSpace(default_removed=2), weights=None,
                                     input_size=32).defaults()["removed"] == 2
    assert config.SearchSpaceConfig().widths[0] == 0  # `tune`'s default space offers that head


def test_a_search_with_stochastic_depth_freezes_through_the_units_it_names():
    """Stochastic depth adds a Dropout layer to each residual block, so layer counts move: a
    trial that freezes J units must still freeze through the J-th unit of the model it builds."""
    def hypermodel(drop_path):
        recipe = training.Recipe(head_epochs=1, fine_tune_epochs=1, verbose=0, drop_path=drop_path)
        return tuning.TransferHyperModel("efficientnet_lite0", 2, recipe, tuning.SearchSpace(widths=(0,)),
                                         weights=None, input_size=32)

    plain, dropped = hypermodel(None), hypermodel(0.2)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("removed", 0), hp.Fixed("frozen_units", 12)
    layers = backbone_of(dropped.build(hp)).layers
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in layers) > 0
    k_plain, k_dropped = plain.frozen_layers(0, 12), dropped.frozen_layers(0, 12)
    assert k_dropped > k_plain  # the Dropout layers below the 12th unit
    assert layers[k_dropped - 1].name == plain.template.layers[k_plain - 1].name == "block6a_project_bn"


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
    with pytest.raises(ValueError, match="Received: kind='nope'"):
        tuning.make_tuner(_hypermodel(), "nope")
    with pytest.raises(ValueError, match="a:b"):
        config.parse_range("one")
    with pytest.raises(ValueError, match=r"Received: frozen_range=\(0, 15\)"):
        _hypermodel(removed_range=(0, 3), frozen_range=(0, 15))
    assert _hypermodel(removed_range=(0, 3), frozen_range=(10, 14)).frozen_range == (10, 14)


@pytest.mark.parametrize("kind", ["random", "bayesian", "hyperband"])  # grid, halving: their own tests below
def test_every_trial_completes_and_results_are_written(kind, tmp_path):
    """Keras Tuner logs a failed trial and returns normally; this catches that (e.g. the
    missing-tensorboard failure of keras-tuner 1.4.8 on TF 2.21)."""
    hm = _hypermodel(removed_range=(0, 2), frozen_range=(12, 14))
    tuner = tuning.make_tuner(hm, kind, str(tmp_path), max_trials=3, max_epochs=2)
    tuner.search(_splits(), verbose=0)
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


@pytest.mark.parametrize("kind", ["grid", "random", "hyperband"])
def test_keras_tuners_state_files_are_replaced_whole_so_a_reader_or_a_kill_never_sees_half(kind, tmp_path):
    """A reader that opened a state file before a save still reads the whole old file (written
    in place, it would read a truncated one; so would the next run after a kill mid-write)."""
    tuner = tuning.make_tuner(_hypermodel(removed_range=(0, 3)), kind, str(tmp_path), max_trials=3)
    trial = tuner.oracle.create_trial("t0")
    tuner.save()
    project = tmp_path / "transfer"
    files = [project / "oracle.json", project / f"trial_{trial.trial_id}" / "trial.json", project / "tuner0.json"]
    readers = [open(path) for path in files]
    try:
        before = [path.read_text() for path in files]
        tuner.oracle.update_trial(trial.trial_id, {"val_accuracy": 0.5})
        trial.status = "COMPLETED"
        tuner.oracle.end_trial(trial)
        tuner.save()
        assert [r.read() for r in readers] == before
    finally:
        for r in readers:
            r.close()
    assert json.loads(files[1].read_text())["status"] == "COMPLETED"
    again = tuning.make_tuner(_hypermodel(removed_range=(0, 3)), kind, str(tmp_path), max_trials=3)
    again.reload()
    assert again.oracle.trials[trial.trial_id].status == "COMPLETED"


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
    splits = _splits()
    for frozen_units in (12, 12):  # the same (removed, frozen) twice: second trial computes nothing
        hp = tuning.fixed_hyperparameters({"removed": 1, "frozen_units": frozen_units, "learning_rate": 1e-3})
        hm.fit(hp, hm.build(hp), splits)
    # (train, val) features at the top, once: both stages of both trials use them (a trial builds
    # the same seeded model, so even random weights are the same), and the head is trained once
    assert hm.cache.misses == 2 and hm.cache.hits >= 6 and hm.cache.heads.hits == 1


def _tune_cmd(data_dir, out, trials, tuner="random"):
    return [sys.executable, "-m", "keras_transfer", "tune", "--data", str(data_dir), "--backbone", "vgg16",
            "--weights", "none", "--input-size", "32", "--trials", str(trials), "--epochs", "1",
            "--fine-tune-epochs", "2", "--widths", "8", "--batch-size", "4", "--removed-range", "0:3",
            "--tuner", tuner, "--no-retrain", "--out", str(out)]


# trials a search of --trials 3 runs: halving trains the best third (1 of 3) again at the full budget
_TRIALS_OF_3 = {"random": 3, "grid": 3, "halving": 4}


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT}
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
@pytest.mark.parametrize("tuner", ["grid", "halving"])
def test_a_search_killed_mid_trial_resumes_and_keeps_finished_trials(guitars, tmp_path, tuner):
    out = tmp_path / "search"
    proc = subprocess.Popen(_tune_cmd(guitars, out, 3, tuner), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env())
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
    again = subprocess.run(_tune_cmd(guitars, out, 3, tuner), capture_output=True, text=True, timeout=400, env=_env())
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "resuming the search" in again.stdout
    after = _trial_states(out)
    for trial_id, state in before.items():
        assert after[trial_id] == state, "a finished trial must be kept as it was"
    n = _TRIALS_OF_3[tuner]
    assert sum(s == "COMPLETED" for s, _ in after.values()) == n
    assert len({config for _, config in after.values()}) == n  # no configuration trained twice
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == n


@pytest.mark.slow
@pytest.mark.parametrize("tuner, workers", [("grid", 1), ("halving", 2)])
def test_distributed_search_chief_and_workers_finish_by_themselves(guitars, tmp_path, tuner, workers):
    out = tmp_path / "dist"
    port = free_port()
    procs = {}
    start = time.time()
    for tuner_id in ["chief"] + [f"tuner{i}" for i in range(workers)]:
        env = _env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port))
        procs[tuner_id] = subprocess.Popen(_tune_cmd(guitars, out, 3, tuner), stdout=subprocess.PIPE,
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
    assert {t: p.returncode for t, p in procs.items()} == {t: 0 for t in procs}, \
        {t: o[-1500:] for t, o in outs.items()}
    n = _TRIALS_OF_3[tuner]
    done = [sum(line.startswith("[head]") for line in outs[w].splitlines()) for w in procs if w != "chief"]
    assert sum(done) == n, "the workers run every trial; the chief only serves the oracle"
    assert not any(line.startswith("[head]") for line in outs["chief"].splitlines())
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n and all(r["status"] == "COMPLETED" for r in rows)
    assert "top trials" in outs["chief"] and "linear probe on pooled" in outs["chief"]
    print(f"distributed {tuner} search: {n} trials in {seconds:.1f} s, trials per worker {done}")


_TRIAL_CALLS = []


class _TrialSpy(keras.callbacks.Callback):
    """Keras Tuner deep-copies search callbacks, so calls are recorded in a module list."""

    def on_epoch_end(self, epoch, logs=None):
        _TRIAL_CALLS.append((self.model.name, tuple(self.model.input_shape), "val_accuracy" in (logs or {})))


def test_grid_trials_that_start_the_head_stage_alike_train_it_once(tmp_path):
    """Same removed units, head and data; only fine-tuning differs: Keras Tuner's own callbacks do
    not stop the reuse, a user's callback (which would miss the head's epochs) does."""
    hm = _hypermodel(removed_range=(3, 3), frozen_range=(9, 10), dropouts=(0.2,), learning_rates=(1e-3,))
    tuning.make_tuner(hm, "grid", str(tmp_path), project_name="a").search(_splits(), verbose=0)
    assert hm.cache.heads.hits == 1
    hm = _hypermodel(removed_range=(3, 3), frozen_range=(9, 10), dropouts=(0.2,), learning_rates=(1e-3,))
    tuning.make_tuner(hm, "grid", str(tmp_path), project_name="b").search(
        _splits(), verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert hm.cache.heads.hits == 0


def test_keras_tuner_callbacks_run_in_trials_and_see_the_classifier(tmp_path):
    _TRIAL_CALLS.clear()
    tuner = tuning.make_tuner(_hypermodel(removed_range=(0, 1)), "random", directory=str(tmp_path), max_trials=2)
    tuner.search(_splits(), callbacks=[_TrialSpy()], verbose=0)
    assert len(_TRIAL_CALLS) == 2 * 2  # 2 trials x (1 head + 1 fine-tuning epoch)
    assert all(shape == (None, 32, 32, 3) and has_val for _, shape, has_val in _TRIAL_CALLS)
    assert glob.glob(os.path.join(str(tmp_path), "transfer", "trial_*", "checkpoint.weights.h5"))  # its best-epoch save


def test_the_halving_oracle_trains_the_best_share_longer_in_order(tmp_path):
    hm = _hypermodel(removed_range=(0, 2), frozen_range=(14, 14), default_removed=1, dropouts=(0.2,), learning_rates=(1e-3,))
    oracle = tuning.HalvingOracle(tuning.configurations(hm), budgets=((1, 1), (1, 2)), keep=1 / 3,
                                  objective=keras_tuner.Objective("val_accuracy", "max"))
    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hm, directory=str(tmp_path), project_name="h")
    built = []
    original_build = hm.build
    hm.build = lambda hp: (original_build(hp), built.append(hp.get("removed")))[0]
    tuner.search(_splits(), verbose=0)
    rows = tuning.trial_rows(tuner, hm)
    assert [r["rung"] for r in rows] == [0, 0, 0, 1] and all(r["status"] == "COMPLETED" for r in rows)
    assert built == [r["removed"] for r in rows]  # each trial built the configuration it reports
    # the default recipe's (the probe's removed) first, then nearest it, shallowest frozen prefix first
    assert built[:3] == [1, 2, 0]
    first = max(rows[:3], key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert (rows[-1]["removed"], rows[-1]["frozen_units"]) == (first["removed"], first["frozen_units"])
    assert hm.cache.heads.hits == 1  # the promoted trial trains the same 1-epoch head as in rung 0: reused
    budgets = [(t.hyperparameters.values["tuner/head_epochs"], t.hyperparameters.values["tuner/fine_tune_epochs"])
               for _, t in sorted(tuner.oracle.trials.items())]
    assert budgets == [(1, 1)] * 3 + [(1, 2)]
    assert tuning.write_results(rows, str(tmp_path))["rung"] == 1  # the winner comes from the full budget


def test_tune_grid_trains_every_configuration_the_probes_removed_first(guitars, tmp_path, monkeypatch):
    from keras_transfer.cli.entry_point import main

    # a random-weight probe recommends anything; say it recommended 2 (range 1:3, cut to 1:2 here)
    monkeypatch.setattr(tuning.tune, "removed_range", lambda *args: ((1, 2), 2))
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
    from keras_transfer.cli.entry_point import main

    out = tmp_path / "halving"
    argv = ["tune", "--data", str(guitars), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "halving", "--trials", "3", "--epochs", "1", "--fine-tune-epochs", "2", "--widths", "8",
            "--dropouts", "0.0", "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "1:2",
            "--frozen-range", "9:13", "--out", str(out)]
    assert main(argv) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["COMPLETED"] * 4
    assert [r["rung"] for r in rows] == ["0"] * 3 + ["1"]  # 3 at 1+1 epochs, the best third on
    stopped = sorted(rows[:3], key=lambda r: (-float(r["val_accuracy"]), float(r["val_loss"])))
    promoted = {(r["removed"], r["frozen_units"]) for r in rows[3:]}
    assert (stopped[0]["removed"], stopped[0]["frozen_units"]) in promoted
    best = json.load(open(out / "best.json"))
    assert best["best"]["status"] == "COMPLETED" and os.listdir(out / "export") == ["1"]


def test_a_search_folder_resumes_only_the_same_search_and_refuses_anything_else(guitars, tmp_path, capsys):
    """tune never writes over a user's files, never 'resumes' a search on other data or other
    settings, and says which; it writes skipped.csv (the folder's files are the package's)."""
    import shutil

    from keras_transfer.cli.entry_point import main

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


def test_a_finished_search_run_again_changes_nothing_and_tensorboard_shows_its_trials(guitars, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from keras_transfer.cli.entry_point import main

    out = tmp_path / "again"
    argv = ["tune", "--data", str(guitars), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--trials", "2", "--epochs", "1", "--fine-tune-epochs", "1", "--widths", "0", "8",
            "--dropouts", "0.2", "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "3:3",
            "--frozen-range", "11:11", "--tensorboard", "--out", str(out)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "majority class" in first and "linear probe on pooled block4_pool" in first
    exported = {p: (out / "export" / p).read_bytes() for p in _files(out / "export")}
    best = json.load(open(out / "best.json"))
    assert main(argv) == 0  # the same command again: nothing to train, nothing new to export
    second = capsys.readouterr().out
    assert "was exported before" in second and "retraining" not in second
    assert {p: (out / "export" / p).read_bytes() for p in _files(out / "export")} == exported
    assert json.load(open(out / "best.json")) == best and os.listdir(out / "export") == ["1"]
    # Keras Tuner's HParams dashboard: one session per trial, with the trial's (removed, frozen_units, width)
    sessions = []
    for trial in sorted(os.listdir(out / "tensorboard")):
        events = EventAccumulator(str(out / "tensorboard" / trial / "execution0"))
        events.Reload()
        for content in events.PluginTagToContent("hparams").values():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):
                sessions.append({k: v.number_value for k, v in data.session_start_info.hparams.items()})
    assert sorted(s["width"] for s in sessions) == [0, 8] and all(s["removed"] == 3 for s in sessions)
    assert (out / "tensorboard" / sorted(os.listdir(out / "tensorboard"))[0] / "execution0" / "validation").is_dir()


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_a_search_below_its_floor_says_so(tmp_path, capsys):
    """Trials that cannot learn (fine-tuning at rate 0, no head stage) on classes a logistic
    regression separates perfectly: tune prints the floor beside them and warns."""
    from PIL import Image

    from keras_transfer.cli.entry_point import main

    for c, level in enumerate((20, 120, 230)):
        os.makedirs(tmp_path / "d" / f"c{c}")
        for i in range(8):
            Image.new("RGB", (32, 32), (level + i, level, 255 - level)).save(tmp_path / "d" / f"c{c}" / f"{i}.png")
    out = tmp_path / "below"
    argv = ["tune", "--data", str(tmp_path / "d"), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--trials", "1", "--epochs", "0", "--fine-tune-epochs", "1", "--widths", "8",
            "--dropouts", "0.0", "--learning-rates", "0", "--batch-size", "4", "--removed-range", "3:3",
            "--frozen-range", "11:11", "--no-retrain", "--out", str(out)]
    assert main(argv) == 0
    shown = capsys.readouterr()
    best = json.load(open(out / "best.json"))
    assert best["floor"]["linear_probe"]["val_accuracy"] == 1.0 and best["best"]["val_accuracy"] < 1.0
    assert best["floor"]["below"] is True
    assert "WARNING: the best trial is below the linear-probe floor" in shown.out
    assert "retrained, exported" not in shown.out and "exported:" not in shown.out  # --no-retrain
    assert "is below the linear-probe floor (val 1.000" in shown.out + shown.err


def test_a_trials_score_is_its_kept_weights_accuracy_on_validation(tmp_path):
    """Each trial's reported val accuracy is what its checkpoint (the weights it kept, which
    get_best_models and the export load) scores on the validation images."""
    hm = _hypermodel(removed_range=(2, 3), frozen_range=(10, 12),
                     recipe=training.Recipe(head_epochs=2, fine_tune_epochs=3, batch_size=4, verbose=0, patience=None,
                                            fine_tune_learning_rate=3e-3))
    splits = _splits(n=40)
    ended_with, fit = [], hm.fit

    def fit_and_score(hp, model, *args, **kwargs):  # the model a trial ends with, scored as a user would
        result = fit(hp, model, *args, **kwargs)
        ended_with.append(training.evaluate(model, splits.val)["accuracy"])
        return result

    hm.fit = fit_and_score
    tuner = tuning.make_tuner(hm, "grid", str(tmp_path), max_trials=3)
    tuner.search(splits, verbose=0)
    rows = tuning.trial_rows(tuner, hm)
    assert len(rows) == 3 and all(r["status"] == "COMPLETED" for r in rows)
    assert [r["val_accuracy"] for r in rows] == pytest.approx(ended_with, abs=1e-6)
    for row in rows:
        trial = tuner.oracle.get_trial(row["trial_id"])
        model = tuner.load_model(trial)  # Keras Tuner's own: build, then its checkpoint
        assert training.evaluate(model, splits.val)["accuracy"] == pytest.approx(row["val_accuracy"], abs=1e-6)
    best = tuner.get_best_models(1)[0]
    assert training.evaluate(best, splits.val)["accuracy"] == pytest.approx(max(r["val_accuracy"] for r in rows))


def _colour_classes(root, n=10):
    """Three classes a logistic regression on random VGG16 features separates perfectly."""
    from PIL import Image

    for c, level in enumerate((20, 120, 230)):
        os.makedirs(root / f"c{c}")
        for i in range(n):
            Image.new("RGB", (32, 32), (level + i, level, 255 - level)).save(root / f"c{c}" / f"{i}.png")
    return str(root)


def test_an_export_scoring_below_its_trial_is_reported_with_its_own_figure(tmp_path, capsys, monkeypatch):
    """If what is exported does not score what the search said (here: its checkpoint replaced by
    a model that only answers one class), tune shows the export's own validation accuracy, judges
    the floor on it, and says it is below its trial."""
    from keras_transfer import export
    from keras_transfer.cli.entry_point import main
    from keras_transfer.tuning import hypermodel as hypermodel_module

    real_fit = hypermodel_module.TransferHyperModel.fit

    def fit_then_damage_checkpoint(self, hp, model, *args, **kwargs):
        result = real_fit(self, hp, model, *args, **kwargs)
        classifier = heads.linear_classifier(model)
        classifier.set_weights([np.zeros_like(w) for w in classifier.get_weights()])  # every answer: class 0
        for cb in kwargs.get("callbacks") or []:
            if hasattr(cb, "filepath"):
                model.save_weights(cb.filepath)
        return result

    monkeypatch.setattr(hypermodel_module.TransferHyperModel, "fit", fit_then_damage_checkpoint)
    folder = _colour_classes(tmp_path / "d")
    out = tmp_path / "s"
    argv = ["tune", "--data", folder, "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--trials", "1", "--epochs", "2", "--fine-tune-epochs", "0", "--widths", "0",
            "--dropouts", "0.0", "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "3:3",
            "--frozen-range", "11:11", "--val-split", "0.3", "--out", str(out)]
    assert main(argv) == 0
    shown = capsys.readouterr()
    best = json.load(open(out / "best.json"))
    splits = data.from_directory(folder, image_size=32, validation_split=0.3, test_split=0.15, seed=0, progress=False)
    served = export.Predictor(str(out / "export")).predict_images(splits.val.images)["probabilities"]
    own = float(np.mean(served.argmax(1) == splits.val.labels))
    assert best["val_accuracy"] == pytest.approx(own) and own < best["best"]["val_accuracy"]
    assert best["floor"]["export_below_trial"] is True
    assert best["floor"]["below"] == (own < best["floor"]["linear_probe"]["val_accuracy"])
    exported_line = next(line for line in shown.out.splitlines() if " exported (its kept weights)" in line)
    assert f"{own:.3f}" in exported_line
    assert "WARNING: the exported model scores below its trial's score in the search" in shown.out
    assert f"the exported model scores val accuracy {own:.3f}, below its trial's" in shown.out + shown.err


def test_the_log_names_trials_as_the_table_does(guitars, tmp_path, capsys):
    from keras_transfer.cli.entry_point import main

    argv = ["tune", "--data", str(guitars), "--backbone", "vgg16", "--weights", "none", "--input-size", "32",
            "--tuner", "grid", "--trials", "2", "--epochs", "1", "--fine-tune-epochs", "0", "--widths", "0", "8",
            "--dropouts", "0.0", "--learning-rates", "0.001", "--batch-size", "4", "--removed-range", "3:3",
            "--frozen-range", "11:11", "--no-retrain", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    with open(tmp_path / "s" / "results.csv") as f:
        ids = [r["trial_id"] for r in csv.DictReader(f)]
    assert len(ids) == 2 and "Trial #" not in out
    assert all(f"Search: running trial {i}\n" in out and f"Trial {i} Complete" in out for i in ids)


def test_an_export_equal_to_its_trial_is_not_called_below_it_across_float32_and_float64():
    """Keras reports 94/120 in float32, the export's own score is numpy's float64: the same accuracy."""
    from keras_transfer.tuning.tune import judge

    floor = {"majority_val": 0.5, "majority_test": 0.5,
             "linear_probe": {"val_accuracy": 94 / 120, "test_accuracy": 0.7, "layer": "block4_conv2"}}
    summary = {"best": {"trial_id": "00", "val_accuracy": float(np.float32(94 / 120))}, "val_accuracy": 94 / 120,
               "export": "x", "exported_from": "the weights the trial kept"}
    verdict = judge(summary, floor)
    assert verdict["below"] is False and verdict["export_below_trial"] is False
    summary["val_accuracy"] = 93 / 120  # one image fewer: below both
    verdict = judge(summary, floor)
    assert verdict["below"] is True and verdict["export_below_trial"] is True


def test_the_heatmap_boxes_the_trial_the_search_takes_among_equals(tmp_path, monkeypatch):
    """Three trials tie; the search takes the cheaper setting (more removed): the box is on it."""
    from keras_transfer import plots

    drawn = {}
    real_save = plots._save

    def keep(fig, path):
        drawn["boxes"] = [(p.get_x() + 0.5, p.get_y() + 0.5) for p in fig.axes[0].patches]
        drawn["rows"] = [t.get_text() for t in fig.axes[0].get_yticklabels()]
        drawn["cols"] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    rows = [{"trial_id": i, "status": "COMPLETED", "rung": 0, "removed": r, "frozen_units": f, "frozen_layers": f,
             "val_accuracy": 0.889, "val_loss": 0.5}
            for i, (r, f) in enumerate([(0, 14), (0, 17), (3, 14)])]
    best = tuning.write_results(rows, str(tmp_path))
    assert (best["removed"], best["frozen_units"]) == (3, 14)
    (col, row), = drawn["boxes"]
    assert (drawn["rows"][int(row)], drawn["cols"][int(col)]) == ("3", "14")


def test_a_search_without_validation_images_is_refused_before_anything_is_written(tmp_path, capsys):
    """Every trial is scored on validation images: with none, the search is refused up front, from
    the CLI (by flag, before the data is read) and from Python (splits without them), not after a
    trial has trained and failed."""
    from keras_transfer.cli.entry_point import main

    out = tmp_path / "search"
    assert main(["tune", "--dataset", "digits", "--backbone", "vgg16", "--weights", "hed", "--input-size", "32",
                 "--val-split", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "validation_split (--val-split) 0 leaves none" in err and "Traceback" not in err
    no_val = data.load(dataset="digits", image_size=32, limit=4, validation_split=0, progress=False)
    with pytest.raises(ValueError, match="these splits have none"):
        tuning.search(no_val, "vgg16", weights="hed", out_dir=str(out), removed_range=(3, 3), verbose=0)
    assert not out.exists()
