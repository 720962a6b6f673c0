import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import data, export, images, training
from helpers import write_good


@pytest.fixture(scope="module")
def model():
    return training.build_model("vgg16", 3, weights=None, input_size=32, removed=3, width=8)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    return out, export.export(model, out, ["les_paul", "sg", "stratocaster"], {"backbone": "vgg16"})


@pytest.mark.parametrize("batch", [1, 5])
def test_reloaded_savedmodel_equals_the_keras_model(model, exported, batch):
    _, version = exported
    x = np.random.default_rng(batch).integers(0, 256, (batch, 32, 32, 3)).astype(np.uint8)
    served = tf.saved_model.load(version).signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(served["probabilities"].numpy(), model.predict(x.astype("float32"), verbose=0), atol=1e-5)
    ids = served["class_ids"].numpy()
    assert [n.decode() for n in served["class_names"].numpy()] == [["les_paul", "sg", "stratocaster"][i] for i in ids]


def test_any_image_size_is_resized_inside(model, exported):
    x = np.random.default_rng(0).integers(0, 256, (2, 50, 70, 3)).astype(np.uint8)
    out = export.load(exported[0]).predict_images(x)
    expected = model.predict(images.resize(x, (32, 32)).numpy(), verbose=0)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)


def test_layout_and_both_signatures_in_saved_model_cli(exported):
    out, version = exported
    assert version == os.path.join(out, "1")
    assert {"saved_model.pb", "variables", "model.keras", "labels.json"} <= set(os.listdir(version))
    info = json.load(open(os.path.join(version, "labels.json")))
    assert info["class_names"] == ["les_paul", "sg", "stratocaster"] and info["input_size"] == [32, 32]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", version, "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in ("serving_default", "serve_bytes"):
        assert f"signature_def['{signature}']" in shown.stdout
    assert "DT_UINT8" in shown.stdout and "DT_STRING" in shown.stdout


def test_serve_bytes_classifies_files_and_reports_bad_ones(exported, tmp_path):
    rng = np.random.default_rng(0)
    paths = [write_good(str(tmp_path / "a.png"), rng, size=(32, 32)), write_good(str(tmp_path / "b.jpg"), rng, size=(40, 30))]
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    predictor = export.load(exported[0])
    results, skipped = predictor.predict_files(paths + [str(bad)])
    assert [r["path"] for r in results] == paths
    assert skipped == [(str(bad), skipped[0][1])] and "image" in skipped[0][1].lower()
    from PIL import Image

    direct = predictor.predict_images(np.asarray(Image.open(paths[0]).convert("RGB"))[None])
    assert results[0]["probability"] == pytest.approx(float(direct["probabilities"].max()), abs=1e-5)


def test_wrong_dtype_or_rank_is_a_clear_error(exported):
    predictor = export.load(exported[0])
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict_images(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\].*add a batch axis"):
        predictor.predict_images(np.zeros((32, 32, 3), np.uint8))


def test_new_exports_are_new_versions_and_a_failed_one_leaves_the_old(model, tmp_path, monkeypatch):
    out = str(tmp_path / "exp")
    export.export(model, out, ["a", "b", "c"])
    assert export.export(model, out, ["a", "b", "c"]).endswith(os.sep + "2")

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model), "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        export.export(model, out, ["a", "b", "c"])
    assert sorted(os.listdir(out)) == ["1", "2"]  # no version 3, no temporary folder left
    assert export.resolve(out).endswith(os.sep + "2")
    export.load(out)  # the newest complete version still loads


def test_class_names_must_match_outputs(model, tmp_path):
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        export.export(model, str(tmp_path), ["a", "b"])


def test_load_without_an_export_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="keras-transfer export"):
        export.load(str(tmp_path))


@pytest.fixture(scope="module")
def textured_run(tmp_path_factory):
    """A trained-looking model whose answers depend on the pixels (HED weights, standardised
    features, a random classifier), and PNG + JPEG files 5x larger than its input, finely textured."""
    from helpers import write_textured

    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(7)
    for c in ("a", "b", "c"):
        os.makedirs(root / c)
        for i in range(3):
            write_textured(str(root / c / f"{i}.png"), rng)
            write_textured(str(root / c / f"{i}.jpg"), rng, quality=92)
    loaded = data.load_folder(str(root), 32, progress=False)
    model = training.build_model("vgg16", 3, weights="hed", input_size=32, removed=3, width=0, normalize=True)
    training.init_head(model, data.Splits(loaded, loaded.subset([]), loaded.subset([]), loaded.class_names),
                       training.Recipe(linear_probe=False))
    classifier = model.get_layer("head").get_layer("predictions")
    classifier.set_weights([rng.normal(0, 2.0 / np.sqrt(classifier.kernel.shape[0]), classifier.kernel.shape).astype("float32"), np.zeros(3, "float32")])
    out = str(root / "export")
    return model, loaded, export.export(model, out, ["a", "b", "c"])


@pytest.mark.parametrize("ext,tolerance", [(".png", 1e-3), (".jpg", 1e-2)])
def test_served_probabilities_are_the_trained_models(textured_run, ext, tolerance):
    model, loaded, version = textured_run
    paths = [p for p in loaded.paths if p.endswith(ext)]
    trained = training.predict_classes(model, loaded.images[[loaded.paths.index(p) for p in paths]])
    assert trained.max(axis=1).min() < 0.99 and np.ptp(trained[:, 0]) > 0.2, "a model whose answers depend on pixels"
    predictor = export.load(version)
    results, skipped = predictor.predict_files(paths)  # what `keras-transfer predict` does
    assert not skipped
    via_predict = np.array([[r["probabilities"][c] for c in "abc"] for r in results])
    np.testing.assert_allclose(via_predict, trained, atol=tolerance)
    encoded = tf.constant([open(p, "rb").read() for p in paths])
    via_bytes = predictor.saved_model.signatures["serve_bytes"](images=encoded)["probabilities"].numpy()
    np.testing.assert_allclose(via_bytes, trained, atol=tolerance)
    # the test has teeth: the old serving resize (no antialiasing) moves these answers a lot
    full = np.stack([images.decode_file(p) for p in paths])
    plain = training.predict_classes(model, tf.image.resize(full.astype("float32"), (32, 32)).numpy())
    assert np.abs(plain - trained).max() > 10 * tolerance
