import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_every_kind, write_good

from keras_transfer import data, export, training
from keras_transfer.data import images


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
    out = export.Predictor(exported[0]).predict_images(x)
    expected = model.predict(images.resize(x, (32, 32)).numpy(), verbose=0)
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-5)


def test_layout_and_both_signatures_in_saved_model_cli(exported):
    out, version = exported
    assert version == os.path.join(out, "1")
    assert {"saved_model.pb", "variables", "labels.json"} <= set(os.listdir(version))
    assert "model.keras" not in os.listdir(version)  # the run folder's model.keras is the Keras copy
    for folder, dirs, files in os.walk(version):  # a TF Serving process running as another user reads it
        assert os.stat(folder).st_mode & 0o555 == 0o555, folder
        for name in files:
            assert os.stat(os.path.join(folder, name)).st_mode & 0o444 == 0o444, name
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
    predictor = export.Predictor(exported[0])
    results, skipped = predictor.predict_files(paths + [str(bad)])
    assert [r["path"] for r in results] == paths
    assert skipped == [(str(bad), skipped[0][1])] and "image" in skipped[0][1].lower()
    from PIL import Image

    direct = predictor.predict_images(np.asarray(Image.open(paths[0]).convert("RGB"))[None])
    assert results[0]["probability"] == pytest.approx(float(direct["probabilities"].max()), abs=1e-5)


def test_wrong_dtype_or_rank_is_a_clear_error(exported):
    predictor = export.Predictor(exported[0])
    with pytest.raises(TypeError, match="uint8"):
        predictor.predict_images(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\].*add a batch axis"):
        predictor.predict_images(np.zeros((32, 32, 3), np.uint8))


def test_new_exports_are_new_versions_and_a_failed_one_leaves_the_old(model, tmp_path, monkeypatch):
    out = str(tmp_path / "exp")
    export.export(model, out, ["a", "b", "c"])
    assert export.export(model, out, ["a", "b", "c"]).endswith(os.sep + "2")

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", broken_write)
    with pytest.raises(OSError, match="disk full"):
        export.export(model, out, ["a", "b", "c"])
    assert sorted(os.listdir(out)) == ["1", "2"]  # no version 3, no temporary folder left
    assert export.resolve(out).endswith(os.sep + "2")
    export.Predictor(out)  # the newest complete version still loads


def test_a_killed_exports_temporary_folder_is_removed_by_the_next_export(model, tmp_path):
    out = tmp_path / "exp"
    export.export(model, str(out), ["a", "b", "c"])
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()  # its pid runs no more, as after a kill -9 during an export
    left = out / f".tmp-{killed.pid}-2-x1y2"
    (left / "variables").mkdir(parents=True)
    (left / "variables" / "variables.data-00000-of-00001").write_bytes(bytes(1 << 20))
    assert export.export(model, str(out), ["a", "b", "c"]).endswith(os.sep + "2")
    assert sorted(os.listdir(out)) == ["1", "2"]


def test_each_weight_is_stored_once(model, exported):
    """keras-team/keras#23553: ExportArchive.track() stores every variable twice; export() does not track."""
    reader = tf.train.load_checkpoint(os.path.join(exported[1], "variables", "variables"))
    stored = sum(int(np.prod(shape)) for name, shape in reader.get_variable_to_shape_map().items()
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert stored <= model.count_params() + 8  # + the dropout's seed state


def test_resize_is_tensorflows_antialiased_bilinear():
    """images.resize (two matmuls, convertible to TFLite) computes ScaleAndTranslate's filter."""
    rng = np.random.default_rng(3)
    for (h, w), size in [((300, 300), (128, 128)), ((97, 61), (128, 75)), ((1000, 700), (75, 75)), ((32, 32), (32, 32))]:
        x = rng.integers(0, 256, (2, h, w, 3)).astype(np.uint8)
        reference = np.clip(np.round(tf.image.resize(x.astype("float32"), size, antialias=True).numpy()), 0, 255)
        ours = images.resize(x, size).numpy()
        assert ours.shape == (2, *size, 3)
        assert np.abs(ours - reference).max() <= 1 and (ours != reference).mean() < 1e-3
    single = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    assert images.resize(single, (20, 20)).shape == (20, 20, 3)


def test_class_names_must_match_outputs(model, tmp_path):
    with pytest.raises(ValueError, match="2 class names for a model with 3 outputs"):
        export.export(model, str(tmp_path), ["a", "b"])


def test_load_without_an_export_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="keras-transfer export"):
        export.Predictor(str(tmp_path))


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
    splits = data.Splits(loaded, loaded.subset([]), loaded.subset([]), loaded.class_names)
    training.Stage(model, splits, training.Recipe(linear_probe=False), "head", 0, 0).init_head()
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
    predictor = export.Predictor(version)
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


def test_serve_bytes_answers_as_predict_for_every_kind_of_file(textured_run, tmp_path):
    """Transparent, sideways, palette, 16-bit...: the bytes a server receives give the answer
    `keras-transfer predict` gives for the same file, or an error; never another answer."""
    _, _, version = textured_run
    kinds = write_every_kind(str(tmp_path), np.random.default_rng(5), size=(96, 64))
    decoded = [k for k in kinds if k != "transparent.gif"]
    predictor = export.Predictor(version)
    results, skipped = predictor.predict_files([kinds[k] for k in decoded])
    assert not skipped
    via_predict = np.array([[r["probabilities"][c] for c in "abc"] for r in results])
    assert np.ptp(via_predict[:, 0]) > 0.05  # the answers depend on the pixels
    serve_bytes = predictor.saved_model.signatures["serve_bytes"]
    via_bytes = serve_bytes(images=tf.constant([open(kinds[k], "rb").read() for k in decoded]))["probabilities"]
    np.testing.assert_allclose(via_bytes.numpy(), via_predict, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="transparent colour"):
        serve_bytes(images=tf.constant([open(kinds["transparent.gif"], "rb").read()]))
    assert predictor.predict_files([kinds["transparent.gif"]])[0]  # predict decodes it as training did


def test_tflite_gives_the_savedmodels_answers_on_real_files(textured_run, tmp_path):
    """TFLiteConverter.from_saved_model converts the export as it is, and the TFLite interpreter,
    given files decoded as training decodes them, answers as the SavedModel does."""
    model, loaded, _ = textured_run
    version = export.export(model, str(tmp_path / "export"), ["a", "b", "c"], formats=("saved_model", "tflite"))
    assert os.path.getsize(os.path.join(version, export.TFLITE_FILE)) > 1e6
    converted = tf.lite.TFLiteConverter.from_saved_model(version).convert()  # what a user would run
    pixels = [images.decode_file(p) for p in loaded.paths]  # 160x160 PNG and JPEG files, resized inside
    saved = export.Predictor(version)
    for blob in (converted, open(os.path.join(version, export.TFLITE_FILE), "rb").read()):
        runner = tf.lite.Interpreter(model_content=blob).get_signature_runner("serving_default")
        lite = np.concatenate([runner(images=p[None])["probabilities"] for p in pixels])
        served = np.concatenate([saved.predict_images(p[None])["probabilities"] for p in pixels])
        assert np.ptp(served[:, 0]) > 0.2  # answers that depend on the pixels
        np.testing.assert_allclose(lite, served, atol=1e-3)


def test_a_bfloat16_model_is_served_in_float32(tmp_path):
    from keras_transfer.models.surgery import backbone_of
    from keras_transfer.training import precision

    with precision.using("bfloat16"):
        trained = training.build_model("vgg16", 3, weights="hed", input_size=32, removed=3, width=0)
    head = trained.get_layer("head").get_layer("predictions")
    rng = np.random.default_rng(0)
    head.set_weights([rng.normal(0, 0.3, head.kernel.shape).astype("float32"), np.zeros(3, "float32")])
    conv = backbone_of(trained).get_layer("block1_conv1")
    assert conv.compute_dtype == "bfloat16"
    version = export.export(trained, str(tmp_path), ["a", "b", "c"])
    graph = tf.saved_model.load(version).signatures["serving_default"].graph.as_graph_def()
    functions = [n for f in graph.library.function for n in f.node_def]
    assert not [n.name for n in list(graph.node) + functions if "bfloat16" in str(n.attr).lower()
                or n.attr["T"].type == tf.bfloat16.as_datatype_enum]
    x = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    served = export.Predictor(version).predict_images(x)["probabilities"]
    # what is served is the trained weights computed in float32 (what runs.train tests), and the
    # bfloat16 forward pass is that within bfloat16's rounding
    np.testing.assert_allclose(served, training.predict_classes(precision.as_float32(trained), x), atol=1e-5)
    np.testing.assert_allclose(served, training.predict_classes(trained, x), atol=1e-2)
    assert conv.compute_dtype == "bfloat16"  # the trained model is left as it was


def test_an_image_of_no_pixels_is_refused_not_answered(exported):
    served = tf.saved_model.load(exported[1])
    for shape in ((1, 0, 0, 3), (1, 0, 5, 3), (2, 7, 0, 3)):
        empty = tf.zeros(shape, tf.uint8)
        for signature in ("serving_default", "explain"):
            with pytest.raises(tf.errors.InvalidArgumentError, match="height or width of 0 pixels"):
                served.signatures[signature](images=empty)
        with pytest.raises(ValueError, match=r"height or width of 0 pixels.*Received: images of shape"):
            export.Predictor(exported[0]).predict_images(np.zeros(shape, np.uint8))


def test_load_finds_the_export_of_a_run_folder_and_names_a_path_that_does_not_exist(exported, tmp_path):
    import shutil

    out, version = exported
    run = tmp_path / "run"
    shutil.copytree(out, run / "export")
    assert export.Predictor(str(run)).path == str(run / "export" / os.path.basename(version))
    with pytest.raises(FileNotFoundError, match=r"'nosuch/export' does not exist"):
        export.Predictor("nosuch/export")
