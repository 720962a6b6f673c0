"""The front door's learner (issue 36, first cut): one call a step, the numbers of the model it holds."""

import os

import numpy as np
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
