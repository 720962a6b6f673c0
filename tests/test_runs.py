"""End to end through the CLI: a folder with bad files -> train -> export -> predict."""
import csv
import json
import os

import pytest

from keras_transfer.cli import main
from helpers import make_class_folder

TRAIN = ["--backbone", "vgg16", "--weights", "none", "--input-size", "32", "--removed", "3",
         "--width", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--val-split", "0.2",
         "--test-split", "0.2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bad = make_class_folder(str(root / "imgs"), __import__("numpy").random.default_rng(0))
    run = str(root / "run")
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", run]) == 0
    return root, run, bad


def test_train_writes_every_result(trained):
    _, run, _ = trained
    for name in ("config.json", "metrics.json", "history.png", "confusion_matrix.png", "model.keras",
                 "skipped.csv", "head.csv", "fine_tune.csv", "best.weights.h5"):
        assert os.path.exists(os.path.join(run, name)), name
    with open(os.path.join(run, "history.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert 0 <= metrics["accuracy"] <= 1 and metrics["class_names"] == ["blue", "red"]
    assert set(metrics["per_class"]["red"]) == {"precision", "recall", "f1", "support"}
    assert os.path.exists(os.path.join(run, "export", "1", "saved_model.pb"))


def test_skipped_report_lists_exactly_the_bad_files(trained):
    _, run, bad = trained
    with open(os.path.join(run, "skipped.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["path"] for r in rows} == bad
    assert all(r["reason"] for r in rows)


def test_predict_prints_class_and_probability(trained, capsys):
    root, run, _ = trained
    images = [os.path.join(root, "imgs", "red", "r0.jpg"), os.path.join(root, "imgs", "blue", "b0.png")]
    capsys.readouterr()
    assert main(["predict", os.path.join(run, "export"), *images]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    assert all(line.split("\t")[1] in ("red", "blue") and 0 <= float(line.split("\t")[2]) <= 1 for line in lines)
    assert main(["predict", os.path.join(run, "export"), os.path.join(root, "imgs", "red", "notes.jpg")]) == 1
    assert "skipped" in capsys.readouterr().err


def test_export_command_adds_a_version(trained, capsys):
    _, run, _ = trained
    assert main(["export", run]) == 0
    assert os.path.exists(os.path.join(run, "export", "2", "saved_model.pb"))
    assert os.path.exists(os.path.join(run, "export", "1", "saved_model.pb"))


def test_a_finished_run_is_never_overwritten(trained, capsys):
    root, run, _ = trained
    before = open(os.path.join(run, "metrics.json")).read()
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", run]) == 2
    assert "--resume" in capsys.readouterr().err
    assert open(os.path.join(run, "metrics.json")).read() == before
    changed = [a if a != "vgg16" else "vgg19" for a in TRAIN]
    assert main(["train", "--data", str(root / "imgs"), *changed, "--out", run, "--resume"]) == 2
    assert "backbone='vgg16'" in capsys.readouterr().err


def test_sample_data_command(tmp_path, capsys):
    assert main(["sample-data", "guitars", str(tmp_path / "g"), "--n-per-class", "2", "--size", "48"]) == 0
    assert sorted(os.listdir(tmp_path / "g")) == ["les_paul", "sg", "stratocaster"]


def test_bad_data_argument_is_named(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), *TRAIN, "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
