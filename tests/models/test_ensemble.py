"""An ensemble is a plain Keras classifier: its probabilities are its members' mean, it saves and
reloads, it explains, and what cannot be averaged is refused by name."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_transfer import training
from keras_transfer.export import heatmaps
from keras_transfer.models.ensemble import ensemble, members


@pytest.fixture(scope="module")
def pair():
    keras.utils.set_random_seed(0)  # two members with different weights and cuts, both named alike
    return [training.build_model("vgg16", 3, weights=None, input_size=32, removed=r, width=8) for r in (3, 4)]


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3)).astype("float32")


def test_the_ensemble_answers_the_mean_of_its_members(pair, images):
    assert pair[0].name == pair[1].name  # two runs' models share a name: the ensemble still builds
    both = ensemble(pair)
    expected = np.mean([m.predict(images, verbose=0) for m in pair], axis=0)
    np.testing.assert_allclose(both.predict(images, verbose=0), expected, atol=1e-6)
    assert members(both) and [m.name for m in members(both)] == ["member_0", "member_1"]
    assert members(pair[0]) == []
    assert len(both.weights) == sum(len(m.weights) for m in pair)  # shared, not copied
    assert [m.name for m in pair] == [pair[0].name] * 2  # the caller's models are not renamed


def test_an_ensemble_saves_and_reloads_as_plain_keras(pair, images, tmp_path):
    both = ensemble(pair)
    both.save(tmp_path / "ensemble.keras")
    again = keras.saving.load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(again.predict(images, verbose=0), both.predict(images, verbose=0), atol=1e-6)
    assert len(members(again)) == 2


def test_grad_cam_of_an_ensemble_is_its_members_mean_for_the_ensembles_class(pair, images):
    both = ensemble(pair)
    heat, probabilities = heatmaps.grad_cam(both, images)
    np.testing.assert_allclose(probabilities, both.predict(images, verbose=0), atol=1e-6)
    ids = np.asarray(probabilities).argmax(1)
    maps = [np.asarray(heatmaps.grad_cam(m, images, class_ids=ids)[0]) for m in pair]
    assert maps[0].shape == np.asarray(heat).shape and maps[1].shape != maps[0].shape  # the cuts differ
    second = tf.image.resize(maps[1][..., None], maps[0].shape[1:3]).numpy()[..., 0]  # to the first's resolution
    mean = (maps[0] + second) / 2
    expected = mean / np.maximum(mean.max(axis=(1, 2), keepdims=True), 1e-12)
    np.testing.assert_allclose(heat, expected, atol=1e-5)


def test_what_cannot_be_averaged_is_refused_by_name(pair):
    with pytest.raises(ValueError, match="two or more models"):
        ensemble(pair[:1])
    other_size = training.build_model("vgg16", 3, weights=None, input_size=48, removed=3, width=8)
    with pytest.raises(ValueError, match="same input size"):
        ensemble([pair[0], other_size])
    other_classes = training.build_model("vgg16", 4, weights=None, input_size=32, removed=3, width=8)
    with pytest.raises(ValueError, match="different numbers of classes"):
        ensemble([pair[0], other_classes])
    auxiliary = training.build_model("vgg16", 3, weights=None, input_size=32, removed=3, head="binary_auxiliary", width=8)
    with pytest.raises(ValueError, match="several outputs"):
        ensemble([pair[0], auxiliary])
