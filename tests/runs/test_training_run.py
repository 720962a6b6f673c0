"""``train`` end to end: a folder with bad files -> train -> report -> export; a run folder that defends itself."""

import csv
import json
import os

import pytest
from helpers import TRAIN, make_class_folder

from keras_transfer.cli.entry_point import main


def test_train_writes_every_result(trained):
    _, run, _ = trained
    for name in ("config.json", "metrics.json", "history.png", "confusion_matrix.png", "misclassified.png", "model.keras",
                 "skipped.csv", "head.csv", "fine_tune.csv", "fine_tune.weights.h5"):
        assert os.path.exists(os.path.join(run, name)), name
    # the model is kept twice (model.keras, the last stage's weights) besides its export
    weights = [os.path.relpath(os.path.join(d, f), run) for d, _, files in os.walk(run) for f in files
               if f.endswith((".keras", ".h5")) or f.startswith("variables.data")]
    assert sorted(weights) == ["export/1/variables/variables.data-00000-of-00001", "fine_tune.weights.h5",
                               "model.keras"], weights
    assert json.load(open(os.path.join(run, "config.json")))["resolved"] == {"removed": 3, "frozen": 12}
    with open(os.path.join(run, "history.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert 0 <= metrics["accuracy"] <= 1 and metrics["class_names"] == ["blue", "red"]
    assert set(metrics["per_class"]["red"]) == {"precision", "recall", "f1", "support"}
    assert os.path.exists(os.path.join(run, "export", "1", "saved_model.pb"))


def _served_on_test(trained):
    """``(metrics.json, the run's splits drawn again, the export's probabilities on the test images)``."""
    from keras_transfer import data, export

    root, run, _ = trained
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    splits = data.from_directory(str(root / "imgs"), image_size=32, validation_split=0.2, test_split=0.2, seed=0,
                                 progress=False)
    return metrics, splits, export.Predictor(os.path.join(run, "export", "1")).predict_images(splits.test.images)["probabilities"]


def test_the_reported_test_accuracy_is_the_exports(trained):
    """metrics.json scores the model that is served (float32, whatever precision trained it)."""
    import numpy as np

    metrics, splits, served = _served_on_test(trained)
    assert metrics["images"] == len(splits.test)
    assert metrics["accuracy"] == float(np.mean(served.argmax(1) == splits.test.labels))
    assert metrics["confusion_matrix"] == [[int(np.sum((splits.test.labels == i) & (served.argmax(1) == j)))
                                            for j in range(2)] for i in range(2)]


def test_misclassified_shows_the_served_models_mistakes(trained):
    import numpy as np

    metrics, splits, probs = _served_on_test(trained)
    wrong = {splits.test.paths[i] for i in np.flatnonzero(probs.argmax(1) != splits.test.labels)}
    shown = metrics["misclassified_shown"]
    assert {row["name"] for row in shown} == wrong and len(shown) == round((1 - metrics["accuracy"]) * metrics["images"])
    for row in shown:
        i = splits.test.paths.index(row["name"])
        assert row["true"] == splits.class_names[splits.test.labels[i]] != row["predicted"]
        assert abs(row["probability"] - probs[i].max()) < 1e-4
    assert [r["probability"] for r in shown] == sorted((r["probability"] for r in shown), reverse=True)


def test_augmented_training_reports_test_time_augmentation(tmp_path, capsys):
    import numpy as np

    from keras_transfer import data, export
    from keras_transfer.data.augmentation import Views

    make_class_folder(str(tmp_path / "imgs"), np.random.default_rng(5))
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--augment", "top_down", "--augment-views", "4",
                 "--out", run]) == 0
    out = capsys.readouterr().out
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert f"averaged over the 4 top_down views (test-time augmentation): {metrics['tta_accuracy']:.3f}" in out
    splits = data.from_directory(str(tmp_path / "imgs"), image_size=32, validation_split=0.2, test_split=0.2, seed=0,
                                 progress=False)
    served = export.Predictor(os.path.join(run, "export", "1"))
    views = Views("top_down", 4)
    mean = np.mean([served.predict_images(np.ascontiguousarray(views.apply(splits.test.images, v).numpy()
                                                               .round().astype("uint8")))["probabilities"]
                    for v in range(4)], axis=0)
    assert metrics["tta_accuracy"] == float(np.mean(mean.argmax(1) == splits.test.labels))
    np.testing.assert_allclose(served.predict_images(splits.test.images, tta=True)["probabilities"], mean, atol=1e-6)
    assert main(["predict", os.path.join(run, "export"), splits.test.paths[0], "--tta"]) == 0
    line = capsys.readouterr().out.strip().split("\t")
    assert line[1] == splits.class_names[int(mean[0].argmax())] and abs(float(line[2]) - mean[0].max()) < 1e-3


@pytest.mark.parametrize("argv,says", [(["--augment-views", "3"], "set augment too"),
                                       (["--augment", "top_down", "--augment-views", "9"], "top_down views number 1 to 8"),
                                       (["--val-split", "0", "--patience", "2"], "leaves no validation images")])
def test_settings_that_cannot_apply_are_refused(tmp_path, capsys, argv, says):
    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(4))
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, *argv, "--out", str(tmp_path / "run")]) == 2
    assert says in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_skipped_report_lists_exactly_the_bad_files(trained):
    _, run, bad = trained
    with open(os.path.join(run, "skipped.csv")) as f:
        rows = list(csv.DictReader(f))
    assert {r["path"] for r in rows} == bad
    assert all(r["reason"] for r in rows)


def test_a_finished_run_is_never_overwritten(trained, capsys):
    root, run, _ = trained
    before = open(os.path.join(run, "metrics.json")).read()
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", run]) == 2
    assert "--resume" in capsys.readouterr().err
    assert open(os.path.join(run, "metrics.json")).read() == before
    changed = [a if a != "vgg16" else "vgg19" for a in TRAIN]
    assert main(["train", "--data", str(root / "imgs"), *changed, "--out", run, "--resume"]) == 2
    assert "backbone='vgg16'" in capsys.readouterr().err


def test_a_failed_command_leaves_nothing_and_the_corrected_one_trains(tmp_path, capsys):
    rng = __import__("numpy").random.default_rng(1)
    make_class_folder(str(tmp_path / "imgs"), rng)
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--frozen", "mixed5", "--out", run]) == 2
    err = capsys.readouterr().err
    assert "frozen='mixed5'" in err and "block" in err and "Traceback" not in err
    assert not os.path.exists(run)  # nothing was written
    # a folder an older version left with only config.json (no trained epoch) does not block either
    os.makedirs(run)
    open(os.path.join(run, "config.json"), "w").write('{"model": {"backbone": "vgg19"}}')
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--frozen", "block3_pool", "--out", run,
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    for stage in ("head", "fine_tune"):  # TensorBoard's scalars of both stages, where asked
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tb" / stage / "validation"))
    saved = json.load(open(os.path.join(run, "config.json")))
    assert saved["recipe"]["frozen"] == "block3_pool" and saved["resolved"]["frozen"] == 11
    assert json.load(open(os.path.join(run, "metrics.json")))["frozen"] == 11
    # resuming with another frozen value is refused: config.json must say what ran
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--frozen", "block2_pool", "--out", run,
                 "--resume"]) == 2
    assert "recipe.frozen='block3_pool'" in capsys.readouterr().err


def test_no_test_images_means_no_test_accuracy(tmp_path, capsys):
    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(4))
    argv = list(TRAIN)
    argv[argv.index("--test-split") + 1] = "0"
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "imgs"), *argv, "--out", run]) == 0
    out = capsys.readouterr().out
    assert "no test images (--test-split 0): no test accuracy" in out and "\ntest accuracy" not in out
    metrics = json.load(open(os.path.join(run, "metrics.json")))
    assert metrics["accuracy"] is None and 0 <= metrics["validation"]["accuracy"] <= 1
    assert not os.path.exists(os.path.join(run, "confusion_matrix.png"))


def test_a_damaged_config_is_named(trained, tmp_path, capsys):
    root, run, _ = trained
    copy = tmp_path / "run"
    os.makedirs(copy)
    (copy / "config.json").write_text('{"data": {"data_dir": "x", "unterminated')
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", str(copy), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{copy}/config.json is not valid JSON" in err and "Traceback" not in err


def test_a_run_folder_defends_itself_from_a_second_process_and_from_changed_data(tmp_path, capsys):
    """A second train on a folder in use is refused with the holder's pid; --resume after images
    were added or edited is refused saying what changed (its splits would be drawn again)."""
    import signal
    import subprocess
    import sys

    import numpy as np
    from helpers import write_good

    make_class_folder(str(tmp_path / "imgs"), np.random.default_rng(5))
    run = str(tmp_path / "run")
    argv = ["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--out", run]
    assert main(argv) == 0
    metrics = open(os.path.join(run, "metrics.json")).read()
    assert json.load(open(os.path.join(run, "data.json")))["images"] == 22  # the readable files
    capsys.readouterr()

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom keras_transfer.runs import run_folders\n"
                               "with run_folders.locked(sys.argv[1], 'keras-transfer train'):\n"
                               "    print('held', flush=True); time.sleep(600)", run], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(argv + ["--resume"]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {holder.pid} (keras-transfer train)" in err and "Traceback" not in err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    added = write_good(str(tmp_path / "imgs" / "red" / "new.jpg"), np.random.default_rng(6), colour=(220, 30, 30))
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the data changed since {run!r} started: 1 image(s) added (e.g. {added})" in err
    assert "test images could be ones the model trained on" in err and "Traceback" not in err
    os.remove(added)
    edited = os.path.join(str(tmp_path / "imgs"), "red", "r0.jpg")
    write_good(edited, np.random.default_rng(7), colour=(220, 30, 30))
    assert main(argv + ["--resume"]) == 2
    assert f"1 changed or moved to another class (e.g. {edited})" in capsys.readouterr().err
    assert open(os.path.join(run, "metrics.json")).read() == metrics  # nothing was touched
    assert not os.path.exists(os.path.join(run, ".keras-transfer.lock"))


def test_two_images_a_class_trains_and_says_before_training_there_is_nothing_to_test(tmp_path, capsys):
    import numpy as np
    from helpers import write_good

    rng = np.random.default_rng(9)
    for c in ("a", "b"):
        os.makedirs(tmp_path / "imgs" / c)
        for i in range(2):
            write_good(str(tmp_path / "imgs" / c / f"{i}.png"), rng)
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--out", run]) == 0
    out = capsys.readouterr().out
    said = out.index("no test images: every class has fewer than 3 images, all used for training")
    assert said < out.index("[head]")  # before training, not after
    assert "no test images (every class has fewer than 3 images): no test accuracy" in out
    assert f"exported:   {run}/export/1" in out
    from keras_transfer import plots

    assert "val_loss" not in plots.read_csv_log(os.path.join(run, "head.csv"))  # Keras wrote NA there
    assert os.path.getsize(os.path.join(run, "history.png")) > 5000


LOAD_WITH_PLAIN_KERAS = """
import sys
import numpy as np
import keras_transfer
assert "tensorflow" not in sys.modules, "import keras_transfer must not import TensorFlow"
import keras
model = keras.saving.load_model(sys.argv[1])
images = np.load(sys.argv[2])
print(np.asarray(model.predict(images, verbose=0)).tolist())
"""


def test_model_keras_opens_with_plain_keras_after_import_keras_transfer_in_a_fresh_process(trained, tmp_path):
    """README calls model.keras the trained classifier for further training: Keras itself must open it."""
    import subprocess
    import sys

    import keras
    import numpy as np

    _, run, _ = trained
    images = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3)).astype("uint8")
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITH_PLAIN_KERAS)
    done = subprocess.run([sys.executable, str(script), os.path.join(run, "model.keras"), str(tmp_path / "images.npy")],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = keras.saving.load_model(os.path.join(run, "model.keras")).predict(images, verbose=0)
    np.testing.assert_allclose(json.loads(done.stdout.strip().splitlines()[-1]), expected, atol=1e-5)


@pytest.mark.parametrize("command", ["train", "tune", "probe"])
def test_an_input_size_the_backbone_cannot_take_is_refused_before_any_image_is_read(trained, command, capsys,
                                                                                      monkeypatch, tmp_path):
    from keras_transfer import data

    def must_not_read(*args, **kwargs):
        raise AssertionError("images were read before the input size was checked")

    monkeypatch.setattr(data, "load", must_not_read)
    root, _, _ = trained
    argv = [command, "--data", str(root / "imgs"), "--backbone", "inception_v3", "--weights", "none",
            "--input-size", "50"]
    assert main(argv + ([] if command == "probe" else ["--out", str(tmp_path / "out")])) == 2
    err = capsys.readouterr().err
    assert "inception_v3 needs inputs of at least 75x75 pixels; got 50x50" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "out")


def test_a_loss_share_is_refused_with_a_head_of_one_output_and_older_folders_still_resume(tmp_path, capsys):
    """``--binary-weight`` with gap_dense would weigh nothing: refused, nothing written. Folders
    written when it defaulted to 0.4 for every head resume without it, and with another share
    they are refused as any other change."""
    import dataclasses

    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser
    from keras_transfer.runs import training_run

    make_class_folder(str(tmp_path / "imgs"), __import__("numpy").random.default_rng(5))
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "imgs"), *TRAIN, "--binary-weight", "0.3", "--out", run]) == 2
    err = capsys.readouterr().err
    assert "binary_weight (--binary-weight) is the second output's share of the loss of a head of two outputs" in err
    assert "Traceback" not in err and not os.path.exists(run)

    def old_folder(name, head):
        asked = train_config(build_parser().parse_args(["train", "--data", str(tmp_path / "imgs"), *TRAIN,
                                                         "--head", head, "--out", name]))
        folder = tmp_path / name
        os.makedirs(folder)
        saved = dataclasses.asdict(asked)
        saved["model"]["binary_weight"] = 0.4  # what every folder held before
        (folder / "config.json").write_text(json.dumps(saved))
        (folder / "metrics.json").write_text("{}")
        return str(folder), asked

    for head in ("gap_dense", "ordinal_auxiliary"):
        folder, asked = old_folder(f"old_{head}", head)
        assert asked.model.binary_weight is None
        assert training_run.check_run_dir(folder, asked, resume=True) is True
    other = dataclasses.replace(asked, model=dataclasses.replace(asked.model, binary_weight=0.2))
    with pytest.raises(ValueError, match="was started with model.binary_weight=0.4"):
        training_run.check_run_dir(folder, other, resume=True)
