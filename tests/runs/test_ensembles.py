"""``keras-transfer ensemble``: two runs on one split averaged into one export, whose reported
scores are its own, which serves the members' mean, and whose TFLite file answers as it does."""

import json
import os

import numpy as np
import pytest
from helpers import TRAIN, make_class_folder

from keras_transfer import data, export
from keras_transfer.cli.entry_point import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    make_class_folder(str(root / "imgs"), np.random.default_rng(7))
    for removed in ("3", "4"):
        args = [*TRAIN, "--augment", "top_down", "--augment-views", "2"]
        args[args.index("--removed") + 1] = removed
        assert main(["train", "--data", str(root / "imgs"), *args, "--out", str(root / f"r{removed}")]) == 0
    return root


def _splits(root):
    return data.from_directory(str(root / "imgs"), image_size=32, validation_split=0.2, test_split=0.2, seed=0,
                               progress=False)


def test_the_ensemble_serves_its_members_mean_and_reports_its_own_scores(runs, capsys):
    capsys.readouterr()
    out = str(runs / "both")
    assert main(["ensemble", str(runs / "r3"), str(runs / "r4"), "--out", out, "--format", "tflite"]) == 0
    printed = capsys.readouterr().out
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    splits = _splits(runs)
    members = [export.Predictor(str(runs / r)) for r in ("r3", "r4")]
    served = export.Predictor(out)
    assert served.path == os.path.join(out, "export", "1")
    mean = np.mean([m.predict_images(splits.test.images)["probabilities"] for m in members], axis=0)
    answers = served.predict_images(splits.test.images)["probabilities"]
    np.testing.assert_allclose(answers, mean, atol=1e-5)  # served = the members' mean
    np.testing.assert_allclose(served.predict_tflite(splits.test.images), answers, atol=1e-4)  # TFLite = SavedModel
    assert metrics["accuracy"] == float(np.mean(answers.argmax(1) == splits.test.labels))  # the export's own score
    assert metrics["member_accuracy"] == [json.load(open(runs / r / "metrics.json"))["accuracy"] for r in ("r3", "r4")]
    tta = served.predict_images(splits.test.images, tta=True)["probabilities"]
    assert metrics["tta_accuracy"] == float(np.mean(tta.argmax(1) == splits.test.labels))
    val = np.mean([m.predict_images(splits.val.images)["probabilities"] for m in members], axis=0)
    assert metrics["val_accuracy"] == float(np.mean(val.argmax(1) == splits.val.labels))
    assert f"test accuracy {metrics['accuracy']:.3f} on {len(splits.test)} images" in printed
    assert f"validation accuracy {metrics['val_accuracy']:.3f}" in printed
    heat = served.explain_images(splits.test.images[:2])
    assert heat["heatmaps"].shape[0] == 2 and float(heat["heatmaps"].max()) == pytest.approx(1.0, abs=1e-5)
    # the folder is a run folder to the other commands: exported again, it answers the same
    assert main(["export", out]) == 0
    again = export.Predictor(os.path.join(out, "export", "2")).predict_images(splits.test.images)["probabilities"]
    np.testing.assert_allclose(again, answers, atol=1e-5)


def test_members_on_other_splits_and_a_used_folder_are_refused(runs, capsys):
    capsys.readouterr()
    other = [*TRAIN, "--seed", "1"]
    assert main(["train", "--data", str(runs / "imgs"), *other, "--out", str(runs / "seed1")]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(runs / "r3"), str(runs / "seed1"), "--out", str(runs / "mixed")]) == 2
    said = capsys.readouterr().err
    assert "did not split the same images the same way (seed 0 vs 1)" in said and "--seed" in said
    assert not os.path.exists(runs / "mixed")
    (runs / "used").mkdir()
    (runs / "used" / "keep.txt").write_text("mine")
    assert main(["ensemble", str(runs / "r3"), str(runs / "r4"), "--out", str(runs / "used")]) == 2
    assert "is not empty" in capsys.readouterr().err and (runs / "used" / "keep.txt").read_text() == "mine"
    assert main(["ensemble", str(runs / "r3"), "--out", str(runs / "one")]) == 2
    assert "two or more run folders" in capsys.readouterr().err
    assert main(["ensemble", str(runs / "r3"), str(runs / "nothing"), "--out", str(runs / "none")]) == 2
    assert "nothing" in capsys.readouterr().err


def test_a_failed_export_leaves_the_folder_as_it_was(runs, capsys, monkeypatch):
    from keras_transfer.runs import ensembles

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ensembles.export, "export", broken)
    capsys.readouterr()
    for out in (runs / "failed", runs / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert main(["ensemble", str(runs / "r3"), str(runs / "r4"), "--out", str(out)]) == 2
        assert "No space left on device" in capsys.readouterr().err
        # nothing half-written: an absent folder stays absent, an empty one empty
        assert (not out.exists()) if out.name == "failed" else os.listdir(out) == []
    monkeypatch.undo()
    assert main(["ensemble", str(runs / "r3"), str(runs / "r4"), "--out", str(runs / "failed")]) == 0  # run again


def test_init_seed_trains_another_model_on_the_same_split(runs, capsys):
    import keras

    args = [*TRAIN, "--augment", "top_down", "--augment-views", "2"]  # r3's command
    for name, init in (("init0", "0"), ("init5", "5")):
        assert main(["train", "--data", str(runs / "imgs"), *args, "--init-seed", init, "--out", str(runs / name)]) == 0
    weights = {name: keras.saving.load_model(runs / name / "model.keras").get_weights() for name in ("r3", "init0",
                                                                                                   "init5")}
    assert all(np.array_equal(a, b) for a, b in zip(weights["r3"], weights["init0"]))  # --init-seed = --seed: r3
    assert not all(np.array_equal(a, b) for a, b in zip(weights["r3"], weights["init5"]))  # another model...
    data = [json.load(open(runs / name / "data.json")) for name in ("r3", "init5")]
    assert data[0] == data[1]  # ...on the same images
    capsys.readouterr()
    assert main(["ensemble", str(runs / "r3"), str(runs / "init5"), "--out", str(runs / "two_seeds")]) == 0  # same split
    assert "averaged over the 2 top_down views" in capsys.readouterr().out  # top_down views do not depend on the seed
