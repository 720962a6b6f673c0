"""The commands on a trained run: predict, explain, export, sample-data; bad arguments and faults end in one line."""

import csv
import json
import os

import pytest
from helpers import TRAIN, make_class_folder

from keras_transfer.cli.entry_point import main


def test_predict_tta_without_trained_views_is_refused(trained, capsys):
    root, run, _ = trained
    image = os.path.join(root, "imgs", "red", "r0.jpg")
    assert main(["predict", os.path.join(run, "export"), image, "--tta"]) == 2
    assert "trained without augmented views" in capsys.readouterr().err


def test_explain_writes_grad_cam_figures_from_the_export_and_from_model_keras(trained, tmp_path, capsys):
    import keras
    import numpy as np

    from keras_transfer import export
    from keras_transfer.data.images import read_image
    from keras_transfer.export import heatmaps
    from keras_transfer.training import precision

    root, run, bad = trained
    good = [os.path.join(root, "imgs", "red", "r0.jpg"), os.path.join(root, "imgs", "blue", "b0.png")]
    out = tmp_path / "cams"
    unreadable = sorted(bad)[0]
    assert main(["explain", os.path.join(run, "export"), *good, unreadable, "--out", str(out)]) == 1  # one bad file
    captured = capsys.readouterr()
    assert f"skipped {unreadable}" in captured.err
    lines = [line.split("\t") for line in captured.out.strip().splitlines()]
    predicted = export.Predictor(os.path.join(run, "export")).predict_files(good)[0]
    assert [(p, c) for p, c, _, _ in lines] == [(r["path"], r["class"]) for r in predicted]
    assert all(os.path.getsize(figure) > 5000 for *_, figure in lines)
    # the served heatmap is the trained model's (in float32, as the export computes, whatever
    # precision training ran in)
    model = precision.as_float32(keras.saving.load_model(os.path.join(run, "model.keras")))
    pixels = np.stack([read_image(p, (32, 32)) for p in good])
    served = export.Predictor(os.path.join(run, "export")).explain_images(pixels)
    heat, probs = heatmaps.grad_cam(model, pixels)
    np.testing.assert_allclose(served["heatmaps"], np.asarray(heat), atol=1e-3)
    np.testing.assert_allclose(served["probabilities"], np.asarray(probs), atol=1e-5)
    # a .keras model works too, with the run's class names; the figures already there are kept
    assert main(["explain", os.path.join(run, "model.keras"), good[0], "--out", str(out)]) == 0
    again = capsys.readouterr().out.strip().split("\t")
    assert again[1] == lines[0][1] and again[3].endswith(".gradcam-2.png") and os.path.exists(lines[0][3])


def test_predict_a_folder_writes_the_top_classes_to_csv_and_json(trained, tmp_path, capsys):
    root, run, bad = trained
    out = tmp_path / "predictions.csv"
    code = main(["predict", os.path.join(run, "export"), str(root / "imgs"), "--top-k", "2", "--output", str(out)])
    assert code == 1  # the folder holds unreadable files: reported, and the exit code says so
    with open(out) as f:
        rows = list(csv.DictReader(f))
    readable = sorted(os.path.join(d, n) for d, _, names in os.walk(root / "imgs") for n in names
                      if n.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".gif")) and os.path.join(d, n) not in bad)
    assert sorted(r["path"] for r in rows) == readable
    for r in rows:
        assert {r["class_1"], r["class_2"]} == {"red", "blue"}
        assert float(r["probability_1"]) >= float(r["probability_2"])
        assert abs(float(r["probability_1"]) + float(r["probability_2"]) - 1) < 1e-3
    err = capsys.readouterr().err
    assert all(f"skipped {p}" in err for p in bad if p.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".gif")))
    as_json = tmp_path / "p.json"
    assert main(["predict", os.path.join(run, "export"), readable[0], str(tmp_path / "missing.jpg"),
                 "--output", str(as_json)]) == 1
    written = json.load(open(as_json))
    assert [p["path"] for p in written["predictions"]] == [readable[0]]
    assert written["skipped"] == [{"path": str(tmp_path / "missing.jpg"), "reason": "no such file or folder"}]
    assert main(["predict", os.path.join(run, "export"), readable[0], "--top-k", "0"]) == 2


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


def test_export_command_adds_a_version(trained, tmp_path, capsys):
    import shutil

    run = str(tmp_path / "run")  # a copy: the session's run folder is the one other tests read as train wrote it
    shutil.copytree(trained[1], run)
    assert main(["export", run, "--format", "tflite"]) == 0
    assert os.path.exists(os.path.join(run, "export", "2", "saved_model.pb"))
    assert os.path.getsize(os.path.join(run, "export", "2", "model.tflite")) > 1000
    assert os.path.exists(os.path.join(run, "export", "1", "saved_model.pb"))
    assert "model.tflite" in capsys.readouterr().out


def test_sample_data_command(tmp_path, capsys):
    assert main(["sample-data", "guitars", str(tmp_path / "g"), "--n-per-class", "2", "--size", "48"]) == 0
    assert sorted(os.listdir(tmp_path / "g")) == ["les_paul", "sg", "stratocaster"]


def test_bad_data_argument_is_named(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), *TRAIN, "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err


def test_stochastic_depth_for_a_backbone_without_it_is_refused_before_any_work(tmp_path, capsys):
    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(2))
    assert main(["train", "--data", str(tmp_path / "imgs"), "--backbone", "vgg16", "--weights", "hed",
                 "--drop-path", "0.2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "drop_path (--drop-path): vgg16's stochastic depth cannot be set (it can for: efficientnet_lite0" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "run")


def test_imagenet_weights_offline_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(2))
    argv = [a if a != "none" else "imagenet" for a in TRAIN]
    assert main(["train", "--data", str(tmp_path / "imgs"), *argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not download the imagenet weights for vgg16" in err[0]
    assert ".keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err[0] or "KERAS_HOME" in os.environ
    assert "weights='hed' works offline" in err[0]
    assert not os.path.exists(tmp_path / "run")


def test_output_to_a_file_has_no_terminal_codes(tmp_path):
    """Off a terminal, Keras prints one plain line per epoch; no line is printed twice."""
    import subprocess
    import sys

    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(3))
    exe = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    out = subprocess.run([exe, "train", "--data", str(tmp_path / "imgs"), *TRAIN, "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\x1b[" not in out.stdout and "\r" not in out.stdout and "\x1b[" not in out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert not [a for a, b in zip(lines, lines[1:]) if a == b]
    assert any("val_accuracy" in line for line in lines) and "test accuracy" in out.stdout
    # Keras Tuner's display erases lines on a terminal; in a file it does not
    tune = subprocess.run([exe, "tune", "--data", str(tmp_path / "imgs"), "--backbone", "vgg16", "--weights", "none",
                           "--input-size", "32", "--trials", "1", "--epochs", "1", "--fine-tune-epochs", "1",
                           "--removed-range", "3:3", "--widths", "8", "--val-split", "0.2", "--test-split", "0.2",
                           "--out", str(tmp_path / "search")], capture_output=True, text=True, timeout=600)
    assert tune.returncode == 0, tune.stderr[-3000:]
    assert "Trial 0 Complete" in tune.stdout and "exported trial 0 (the weights the trial kept)" in tune.stdout
    assert "\x1b[" not in tune.stdout + tune.stderr and "\r" not in tune.stdout
    lines = [line for line in tune.stdout.splitlines() if line.strip()]
    assert not [a for a, b in zip(lines, lines[1:]) if a == b]


@pytest.mark.parametrize("flag,value,says", [("--epochs", "-1", "at least 0"), ("--batch-size", "0", "at least 1"),
                                             ("--limit-per-class", "0", "at least 1"),
                                             ("--input-size", "22400", "between 1 and 1024"),
                                             ("--test-split", "1.5", "between 0.0 and 0.95"),
                                             ("--removed", "-2", "at least 0"), ("--epochs", "two", "an integer")])
def test_numbers_are_range_checked_where_they_are_parsed(tmp_path, capsys, flag, value, says):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(tmp_path), *TRAIN, flag, value, "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and says in err and f"Received: {value}" in err.replace("'", "")
    assert not os.path.exists(tmp_path / "run")


def test_a_damaged_checkpoint_or_export_is_one_line_naming_the_file(trained, tmp_path, capsys):
    import shutil

    root, run, _ = trained
    copy = str(tmp_path / "run")
    shutil.copytree(run, copy)
    os.remove(os.path.join(copy, "metrics.json"))  # a run stopped after its stages, before its report
    weights = os.path.join(copy, "fine_tune.weights.h5")
    blob = open(weights, "rb").read()
    open(weights, "wb").write(blob[: len(blob) // 2])  # cut short, as by a full disk or a copy
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", copy, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{weights} cannot be read (" in err and "damaged or cut short" in err and "Traceback" not in err

    exports = os.path.join(copy, "export")
    newest = max(int(v) for v in os.listdir(exports))
    shutil.copytree(os.path.join(exports, str(newest)), os.path.join(exports, str(newest + 1)))
    data_file = os.path.join(exports, str(newest + 1), "variables", "variables.data-00000-of-00001")
    blob = open(data_file, "rb").read()
    open(data_file, "wb").write(blob[: len(blob) // 3])  # the newest version copied in part
    image = next(p for p, _, fs in os.walk(root / "imgs") for p in [os.path.join(p, f) for f in fs] if p.endswith(".png"))
    assert main(["predict", exports, image]) == 2
    err = capsys.readouterr().err
    assert f"{exports}/{newest + 1} is not a complete SavedModel" in err
    assert f"use the version before it ({exports}/{newest})" in err and "Traceback" not in err
    assert main(["predict", os.path.join(exports, str(newest)), image]) == 0

    model_file = os.path.join(copy, "model.keras")
    blob = open(model_file, "rb").read()
    open(model_file, "wb").write(blob[: len(blob) // 2])
    for command in (["export", copy], ["explain", model_file, image, "--out", str(tmp_path / "cam")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{model_file} cannot be read (" in err and "damaged or cut short" in err and "Traceback" not in err


@pytest.mark.parametrize("raised,says,code", [
    ("disk", "No space left on device", 2),
    ("oom", "out of memory (OOM when allocating tensor); lower --batch-size or --input-size", 2),
    ("interrupt", "interrupted; run the same command with --resume to continue", 130)])
def test_faults_of_known_kinds_end_in_one_line_and_verbose_shows_the_traceback(tmp_path, capsys, monkeypatch,
                                                                             raised, says, code):
    import errno

    import numpy as np
    import tensorflow as tf

    from keras_transfer import training

    def fault(*args, **kwargs):
        if raised == "disk":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "model.keras"))
        if raised == "oom":
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\nwith shape [...]")
        raise KeyboardInterrupt

    make_class_folder(str(tmp_path / "imgs"), np.random.default_rng(8))
    monkeypatch.setattr(training, "fine_tune", fault)
    argv = ["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--out", str(tmp_path / "run")]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    if raised != "interrupt":
        assert main(argv + ["--verbose"]) == code
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and says in err.strip().splitlines()[-1]
