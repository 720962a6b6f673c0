"""The front door's learner (issue 36, first cut): one call a step, the numbers of the model it holds."""

import os

import numpy as np
import pytest
from PIL import Image

import keras_transfer as kt
from keras_transfer import data, export


def test_a_learner_fine_tunes_evaluates_predicts_and_exports_what_it_holds(tmp_path):
    splits = data.load(dataset="digits", image_size=32, limit=8, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", removed="auto", head_epochs=1, fine_tune_epochs=1,
                         patience=None, verbose=0)
    assert learner.probe["recommended_removed"] == learner.removed  # "auto", as `train`
    histories = learner.fine_tune()
    assert len(histories["head"]["loss"]) == len(histories["fine_tune"]["loss"]) == 1  # patience=None: no stop
    scores = learner.evaluate()
    probabilities = learner.predict(splits.test.images)
    assert scores["accuracy"] == np.mean(probabilities.argmax(1) == splits.test.labels)
    folder = tmp_path / "images"
    os.makedirs(folder)
    for i, image in enumerate(splits.test.images[:3]):
        Image.fromarray(image).save(folder / f"{i}.png")
    np.testing.assert_allclose(learner.predict(str(folder)), probabilities[:3], atol=1e-5)  # files read as trained
    served = export.Predictor(learner.export(str(tmp_path / "export"))).predict_images(splits.test.images)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-4)


def test_keras_transfer_train_and_the_learner_train_the_same_weights(tmp_path):
    """One path: the command line turns its flags into the Learner's arguments, defaults and all."""
    import keras

    from keras_transfer.cli import main

    assert main(["train", "--dataset", "digits", "--input-size", "32", "--limit-per-class", "8", "--backbone", "vgg16",
                 "--weights", "hed", "--head-epochs", "1", "--fine-tune-epochs", "1", "--out", str(tmp_path / "run")]) == 0
    from_cli = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=8, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", head_epochs=1, fine_tune_epochs=1, verbose=0)
    learner.fine_tune()
    cli_weights, api_weights = from_cli.get_weights(), learner.model.get_weights()
    assert len(cli_weights) == len(api_weights)
    for a, b in zip(cli_weights, api_weights):
        np.testing.assert_array_equal(a, b)


def test_lr_find_suggests_a_rate_in_its_sweep_and_leaves_the_weights_as_they_were():
    splits = data.load(dataset="digits", image_size=32, limit=20, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, precision="float32", verbose=0)
    before = [w.copy() for w in learner.model.get_weights()]
    found = learner.lr_find("fine_tune", steps=30, start=1e-6, end=1.0)
    for a, b in zip(before, learner.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert found.rates[0] == 1e-6 and len(found.rates) == len(found.losses) <= 30
    assert found.rates[3] < found.suggestion < found.rates[-1]
    line = found.plot().axes[0].get_lines()[0]  # the figure shows the measured curve
    assert list(line.get_xdata()) == found.rates and list(line.get_ydata()) == found.losses
    learner.lr_find("head", apply=True, steps=20)
    assert learner.recipe.head_learning_rate != kt.recipe().head_learning_rate  # applied to the stage asked for
    assert learner.recipe.fine_tune_learning_rate == kt.recipe().fine_tune_learning_rate


def test_a_saved_learner_loads_back_and_answers_as_it_did(tmp_path):
    splits = data.load(dataset="digits", image_size=32, limit=8, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, head_epochs=1, fine_tune_epochs=0, verbose=0)
    learner.fine_tune()
    learner.save(str(tmp_path / "kept"))
    again = kt.load_learner(str(tmp_path / "kept"))
    np.testing.assert_allclose(again.predict(splits.test.images), learner.predict(splits.test.images), atol=1e-6)
    assert again.removed == 3 and again.recipe == learner.recipe and again.class_names == splits.class_names
    assert again.histories["head"]["loss"] == learner.histories["head"]["loss"]
    with pytest.raises(AttributeError, match="loaded without data"):
        again.evaluate()
    assert kt.load_learner(str(tmp_path / "kept"), data=splits).evaluate() == learner.evaluate()


def test_the_learners_figures_show_its_numbers():
    splits = data.load(dataset="digits", image_size=32, limit=8, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", head_epochs=2, fine_tune_epochs=1, patience=None, verbose=0)
    learner.fine_tune()
    drawn = kt.plots.drawn_series(learner.plot_curves())
    assert drawn["loss train (head)"] == pytest.approx(learner.histories["head"]["loss"])
    assert drawn["loss val (fine_tune)"] == pytest.approx(learner.histories["fine_tune"]["val_loss"])
    confusion = learner.plot_confusion().axes[0]
    counts = np.array(learner.evaluate()["confusion_matrix"])
    assert sorted(int(t.get_text()) for t in confusion.texts) == sorted(counts.ravel().tolist())
    mistakes = learner.mistakes()
    panels = [ax.get_title() for ax in learner.plot_mistakes().axes if ax.images]
    assert panels == [f"true {m['true']}\npredicted {m['predicted']} ({m['probability']:.2f})" for m in mistakes]
    cams = learner.plot_grad_cam(count=3)
    assert len([ax for ax in cams.axes if ax.images]) == 3
    assert learner.plot_probe().axes[0].get_lines()  # the probe's scores per cut
    with pytest.raises(ValueError, match="part must be"):
        learner.evaluate("validation")


def test_a_bad_argument_is_refused_by_name_before_any_work():
    splits = data.load(dataset="digits", image_size=32, limit=4, progress=False)
    with pytest.raises(ValueError, match="removed is a number of units.*Received: removed='three'"):
        kt.Learner(splits, "vgg16", weights="hed", removed="three")
    with pytest.raises(TypeError, match="Recipe has no field"):
        kt.Learner(splits, "vgg16", weights="hed", removed=3, epochs=2)  # the flag's alias, not the field
    with pytest.raises(ValueError, match="Unknown recipe"):
        kt.Learner(splits, "vgg16", weights="hed", removed=3, recipe="fastest")
    no_val = data.load(dataset="digits", image_size=32, limit=4, validation_split=0, progress=False)
    with pytest.raises(ValueError, match="no validation images.*Received: patience=2"):
        kt.Learner(no_val, "vgg16", weights="hed", removed=3, patience=2)


def test_stochastic_depth_trains_with_dropped_blocks_and_answers_without_them(tmp_path):
    """``drop_path``: the Lite backbone the learner builds drops residual branches in training
    only; its answers, and its export's, are the same on every call. A backbone that cannot take
    it is refused before any work."""
    import keras

    splits = data.load(dataset="digits", image_size=32, limit=8, progress=False)
    learner = kt.Learner(splits, "efficientnet_lite0", weights=None, removed=0, head_epochs=1, fine_tune_epochs=1,
                         frozen=0, drop_path=0.3, patience=None, verbose=0)
    drops = [layer for layer in learner.base.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops and max(d.rate for d in drops) < 0.3
    learner.fine_tune()
    probabilities = learner.predict(splits.test.images)
    np.testing.assert_array_equal(learner.predict(splits.test.images), probabilities)
    served = export.Predictor(learner.export(str(tmp_path / "export"))).predict_images(splits.test.images)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-4)
    with pytest.raises(ValueError, match="drop_path: vgg16's stochastic depth cannot be set"):
        kt.Learner(splits, "vgg16", weights="hed", removed="auto", drop_path=0.2)  # before the probe runs


def test_a_loss_share_for_a_head_of_one_output_is_refused_before_the_probe(monkeypatch):
    """``binary_weight`` weighs a second output; gap_dense has none, so it would do nothing."""
    from keras_transfer.training import cut_probe

    monkeypatch.setattr(cut_probe, "recommend_for", lambda *a, **k: pytest.fail("the probe ran"))
    splits = data.load(dataset="digits", image_size=32, limit=4, progress=False)
    with pytest.raises(ValueError, match="and the gap_dense head has one. Choose one of those heads, or leave "
                                         "binary_weight out. Received: binary_weight=0.3, head='gap_dense'"):
        kt.Learner(splits, "vgg16", weights="hed", removed="auto", binary_weight=0.3)


def test_the_ordinal_head_trains_from_the_probe_and_ships_class_probabilities(tmp_path, caplog):
    """``head="ordinal_auxiliary"``: the class softmax starts at the linear probe as gap_dense's,
    the second output trains beside it (its loss and error in the history), and what is
    evaluated, predicted and exported is the class probabilities alone."""
    import logging

    splits = data.load(dataset="digits", image_size=32, limit=8, progress=False)
    with caplog.at_level(logging.INFO, logger="keras_transfer"):
        learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, head="ordinal_auxiliary", binary_weight=0.25,
                             head_epochs=1, fine_tune_epochs=1, patience=None, verbose=0)
        histories = learner.fine_tune()
    assert "linear probe: C=" in caplog.text
    assert {"rank_loss", "rank_mae", "val_class_accuracy"} <= set(histories["fine_tune"])
    assert learner.model.get_layer("head").get_layer("rank").binary_weight == 0.25
    probabilities = learner.predict(splits.test.images)
    assert probabilities.shape == (len(splits.test.labels), splits.num_classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert learner.evaluate()["accuracy"] == np.mean(probabilities.argmax(1) == splits.test.labels)
    served = export.Predictor(learner.export(str(tmp_path / "export"))).predict_images(splits.test.images)
    np.testing.assert_allclose(served["probabilities"], probabilities, atol=1e-4)
    with pytest.raises(ValueError, match="class_weight does not apply to the ordinal_auxiliary head"):
        kt.Learner(splits, "vgg16", weights="hed", removed=3, head="ordinal_auxiliary", class_weight=True,
                   head_epochs=1, fine_tune_epochs=0, verbose=0).fine_tune()


def test_a_bfloat16_learner_scores_its_current_weights_in_float32():
    """served() builds the float32 twin once and gives it the weights the model has now: a model
    trained further with plain Keras is scored as it is, not as it was."""
    from keras_transfer.training import precision

    splits = data.load(dataset="digits", image_size=32, limit=6, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, precision="bfloat16", verbose=0)
    before = learner.predict(splits.test.images)
    twin = learner.served()
    assert twin is not learner.model and twin.layers[-1].compute_dtype == "float32"
    head = learner.model.get_layer("head")
    rng = np.random.default_rng(0)  # move them as a user's own keras fit would
    head.set_weights([w + rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in head.get_weights()])
    after = learner.predict(splits.test.images)
    assert learner.served() is twin and not np.allclose(after, before)
    np.testing.assert_allclose(after, precision.as_float32(learner.model).predict(splits.test.images, verbose=0),
                               atol=1e-5)


def test_predict_names_a_path_that_gives_no_image(tmp_path):
    splits = data.load(dataset="digits", image_size=32, limit=4, progress=False)
    learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, verbose=0)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        learner.predict(str(tmp_path / "nowhere.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="a folder with no jpg/jpeg/png/bmp/gif files"):
        learner.predict([str(tmp_path / "empty")])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read .*broken.png"):
        learner.predict(str(tmp_path / "broken.png"))
