"""tf.distribute without a GPU, as TensorFlow's own tests do it: logical CPU devices for
MirroredStrategy, several processes on 127.0.0.1 for MultiWorkerMirroredStrategy."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_transfer.training import distribute

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(HERE)))  # the repository
PY = sys.executable


def _env(**extra):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT, **extra}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


@pytest.mark.parametrize("path", ["plain", "cached"])
def test_mirrored_over_two_logical_cpus_equals_one_device(path):
    out = subprocess.run([PY, os.path.join(HERE, "mirrored_job.py"), path], capture_output=True, text=True,
                         timeout=600, env=_env())
    assert out.returncode == 0, out.stderr[-3000:]
    diff = float(re.search(r"max_weight_diff (\S+)", out.stdout).group(1))
    assert diff < 1e-4, out.stdout
    assert "MirroredStrategy with 2 replica(s)" in out.stdout


def test_auto_strategy_on_this_machine_is_the_default_one(monkeypatch, caplog):
    caplog.set_level("INFO", logger="keras_transfer")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.strategy_for("auto")
    assert strategy.num_replicas_in_sync == 1 and distribute.is_chief(strategy)
    assert "1 replica(s)" in caplog.text


def test_bad_strategy_arguments(monkeypatch):
    with pytest.raises(ValueError, match="choose one of"):
        distribute.strategy_for("horovod")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribute.strategy_for("auto")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ValueError, match="2 or more tasks"):
        distribute.strategy_for("multi_worker")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cluster_env(ports, index, tmp):
    config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    return _env(TF_CONFIG=json.dumps(config), TMPDIR=str(tmp), KERAS_TRANSFER_COLLECTIVE_TIMEOUT="60")


def _train_args(data_dir, run, epochs=1):
    return [PY, "-m", "keras_transfer", "train", "--data", str(data_dir), "--backbone", "vgg16", "--weights", "none",
            "--input-size", "32", "--removed", "3", "--width", "8", "--epochs", str(epochs),
            "--fine-tune-epochs", str(epochs), "--batch-size", "4", "--out", str(run)]


@pytest.fixture(scope="module")
def guitars(tmp_path_factory):
    from keras_transfer import data

    return data.sample_guitars(str(tmp_path_factory.mktemp("mw") / "data"), n_per_class=8, seed=0, size=48)


def _two_workers(mode, tmp_path, *args):
    ports = _free_ports(2)
    procs = [subprocess.Popen([PY, os.path.join(HERE, "multi_worker_job.py"), mode, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_cluster_env(ports, i, tmp_path))
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return procs, outs


@pytest.mark.slow
def test_two_workers_fit_with_callbacks_and_class_weights_like_one_machine(tmp_path):
    procs, outs = _two_workers("fit", tmp_path)
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    reports = [json.loads(next(line for line in o.splitlines() if line.startswith("{"))) for o in outs]
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"], "both workers must end with the same weights"
    for report in reports:  # the user's callback: every epoch of both stages, the classifier, Keras's logs
        assert [e[0] for e in report["epochs"]] == [0, 1, 0, 1]
        assert {e[1] for e in report["epochs"]} == {"vgg16_gap_dense"}
        assert all({"loss", "accuracy", "val_loss", "val_accuracy"} <= set(e[2]) for e in report["epochs"])


@pytest.mark.slow
def test_two_workers_streaming_files_each_read_their_own_share_once_and_train_like_one(tmp_path):
    import keras
    import multi_worker_job as job
    import numpy as np
    from helpers import write_good

    from keras_transfer import training

    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(12):
            write_good(str(folder / name / f"{name}{i}.png"), rng, colour=colour)
    procs, outs = _two_workers("stream", tmp_path, str(folder))
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    reports = [json.loads(next(line for line in o.splitlines() if line.startswith("{"))) for o in outs]
    assert sorted(tuple(r["share"]) for r in reports) == [(2, 0), (2, 1)]
    splits = job.stream_splits(str(folder))
    train = set(splits.train.paths)  # 16 files: each worker reads 8 of them
    shares = [set(r["read"]) for r in reports]
    assert all(len(r["read"]) == len(s) == len(train) // 2 for r, s in zip(reports, shares))  # each file read once
    assert not shares[0] & shares[1] and shares[0] | shares[1] == train
    assert [sum(r["batches"]) for r in reports] == [len(train) // 2] * 2
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"]
    # one process, the same global batch (2 workers x 4): the same model up to float noise
    keras.utils.set_random_seed(0)
    model = training.build_model("vgg16", 2, weights=None, input_size=32, removed=3, **job.stream_recipe(8).head_options())
    training.fine_tune(model, splits, job.stream_recipe(8))
    np.testing.assert_allclose(reports[0]["test"], training.predict_classes(model, splits.test.images), atol=1e-4)
    # training decoded each file of the train and val splits on one worker only, once per stage (the
    # features of its cut, which the workers then share), and no file again as the stages trained
    reads = [r["training_reads"] for r in reports]
    assert not set(reads[0]) & set(reads[1]) and set(reads[0]) | set(reads[1]) == train | set(splits.val.paths)
    assert all(r.count(path) == 2 for r in reads for path in set(r))  # head (block4_pool+gap), fine-tuning (block3_pool)


@pytest.mark.slow
def test_keras_fit_under_multi_worker_still_needs_the_workaround(tmp_path):
    """When this fails, Keras has fixed keras-team/keras#20585: delete internals.fit_under_multi_worker."""
    procs, outs = _two_workers("plain", tmp_path)
    assert all("PLAIN FIT FAILED" in o for o in outs), outs[0][-2000:]


@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_one_export(guitars, tmp_path):
    run = tmp_path / "run"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    ports = _free_ports(2)
    start = time.time()
    procs = [subprocess.Popen(_train_args(guitars, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=_cluster_env(ports, i, scratch)) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    seconds = time.time() - start
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    prints = [re.search(r"weights fingerprint (\w+) \((\w+)\)", o).groups() for o in outs]
    assert prints[0][0] == prints[1][0], "both workers must end with the same weights"
    assert [p[1] for p in prints] == ["chief", "worker"]
    assert os.listdir(run / "export") == ["1"]  # written once, by the chief
    assert json.load(open(run / "metrics.json"))["weights_fingerprint"] == prints[0][0]
    assert os.listdir(scratch) == [], "workers clean up their temporary folders"
    print(f"2-worker run: {seconds:.1f} s")


@pytest.mark.slow
def test_a_killed_worker_makes_the_other_fail_clearly_and_soon(guitars, tmp_path):
    ports = _free_ports(2)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    procs = [subprocess.Popen(_train_args(guitars, tmp_path / "run", epochs=200), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_cluster_env(ports, i, scratch))
             for i in range(2)]
    try:
        for line in procs[1].stdout:  # wait until training has started on the worker
            if re.match(r"[Ee]poch 1/", line):
                break
        procs[1].kill()
        start = time.time()
        out = procs[0].communicate(timeout=180)[0]
        waited = time.time() - start
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 3, out[-3000:]
    assert "a worker of the multi-worker cluster stopped" in out
    assert waited < 120


def _processes_running(marker: str) -> list[int]:
    """Pids whose command line holds ``marker`` (this package's processes for one run folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_a_worker_whose_peer_never_starts_ends_within_the_timeout(guitars, tmp_path):
    """The other task of TF_CONFIG never starts: the worker ends with README's message and exit
    code 3 about KERAS_TRANSFER_COLLECTIVE_TIMEOUT after it starts waiting, leaving nothing."""
    ports = _free_ports(2)
    run = tmp_path / "run"
    env = {**_cluster_env(ports, 0, tmp_path), "KERAS_TRANSFER_COLLECTIVE_TIMEOUT": "8"}
    proc = subprocess.Popen(_train_args(guitars, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    try:
        for line in proc.stdout:
            if "waiting up to 8 s for the cluster" in line:
                break
        started = time.time()
        out = proc.communicate(timeout=90)[0]
        waited = time.time() - started
    finally:
        proc.kill()
    assert proc.returncode == 3, out[-2000:]
    assert f"the other task(s) of the cluster (127.0.0.1:{ports[1]}) did not answer within 8 s" in out
    assert "Traceback" not in out and 7 < waited < 20
    assert not run.exists() and not _processes_running(str(run))


@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT takes the same path
def test_a_signal_stops_a_worker_blocked_in_the_cluster_wait(guitars, tmp_path, signum):
    """TensorFlow's own SIGTERM handler only records the signal while the worker waits inside
    C++; the command still stops at once, and no process of it is left."""
    ports = _free_ports(2)
    run = tmp_path / "run"
    proc = subprocess.Popen(_train_args(guitars, run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_cluster_env(ports, 0, tmp_path))
    try:
        for line in proc.stdout:
            if "waiting up to 60 s for the cluster" in line:
                break
        time.sleep(3)  # well inside the wait, after TensorFlow has installed its handler
        assert len(_processes_running(str(run))) == 2  # the command and the worker it supervises
        proc.send_signal(signum)
        out = proc.communicate(timeout=15)[0]
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum, out[-2000:]
    assert f"stopped by {signal.Signals(signum).name}; run the same command with --resume" in out
    time.sleep(0.5)
    assert not _processes_running(str(run))


def test_a_device_the_machine_lacks_is_refused():
    from keras_transfer.training import distribute

    with pytest.raises(ValueError, match=r"'/gpu:7' is not a device of this machine \(it has .*/cpu:0"):
        distribute.strategy_for("auto", "/gpu:7")
    with pytest.raises(ValueError, match="/cpu:3"):
        distribute.strategy_for("mirrored", "/cpu:0,/cpu:3")
    assert distribute.strategy_for("one_device", "/cpu:0").num_replicas_in_sync == 1
