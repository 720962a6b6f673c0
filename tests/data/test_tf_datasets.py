"""``to_dataset``: batched tf.data pipelines."""


import numpy as np
import pytest

from keras_transfer import data


def test_to_dataset_batches_as_float32(rng):
    x = rng.integers(0, 255, (10, 16, 16, 3)).astype(np.uint8)
    y = np.arange(10) % 2
    batches = list(data.to_dataset(x, y, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][0].dtype.name == "float32"
    np.testing.assert_array_equal(batches[0][0].numpy(), x[:4])


@pytest.mark.parametrize("shape", [(6,), (2, 3, 1)])  # pooled features, and image-shaped rows
def test_mixup_blends_each_row_with_a_partner_in_inputs_and_labels_alike(shape):
    """Row i of a batch becomes w * row_i + (1 - w) * row_j in x and in y with the same w and j:
    with x_i = e_i (so x reads off w and j) the labels must follow the same blend; the draws
    change from epoch to epoch and repeat for the same seed."""
    n, classes = 6, 3
    x = np.eye(n, dtype="float32").reshape((n, *shape))
    labels = np.arange(n) % classes
    y = np.eye(classes, dtype="float32")[labels]
    make = lambda seed: data.mixup(data.to_dataset(x, y, batch_size=n), 0.4, seed)  # noqa: E731
    epochs = []
    dataset = make(7)
    for _ in range(2):
        (mixed_x, mixed_y), = [(a.numpy().reshape(n, n), b.numpy()) for a, b in dataset]
        np.testing.assert_allclose(mixed_x.sum(axis=1), 1.0, atol=1e-6)  # a convex blend of two rows
        np.testing.assert_allclose(mixed_y, mixed_x @ y, atol=1e-6)  # the labels of the same blend
        np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, atol=1e-6)
        epochs.append(mixed_x)
    assert not np.allclose(epochs[0], epochs[1])  # drawn anew every epoch
    assert 0 < np.mean((mixed_x > 1e-6) & (mixed_x < 1 - 1e-6)) < 1  # rows really blended, not copied
    (again, _), = [(a.numpy().reshape(n, n), b) for a, b in make(7)]
    np.testing.assert_allclose(again, epochs[0])


def test_mixup_refuses_an_alpha_of_zero_and_labels_of_two_outputs():
    x, y = np.zeros((4, 2), "float32"), np.zeros(4, "int64")
    with pytest.raises(ValueError, match="alpha must be above 0. Received: alpha=0"):
        data.mixup(data.to_dataset(x, y, batch_size=2), 0, seed=0)
    with pytest.raises(ValueError, match=r"one output. Received: labels with outputs \['binary', 'class'\]"):
        data.mixup(data.to_dataset(x, {"class": y, "binary": y}, batch_size=2), 0.2, seed=0)


def test_jittered_moves_the_images_anew_every_epoch_and_keeps_labels_and_weights(rng):
    x = rng.integers(0, 256, (6, 16, 16, 3)).astype("uint8")
    y, weights = np.arange(6) % 3, np.linspace(0.5, 1.0, 6).astype("float32")
    make = lambda seed: data.jittered(data.to_dataset(x, y, batch_size=6, sample_weight=weights), 0.1, seed)  # noqa: E731
    dataset = make(5)
    epochs = []
    for _ in range(2):
        (moved, labels, w), = [tuple(t.numpy() for t in batch) for batch in dataset]
        np.testing.assert_array_equal(labels, y)
        np.testing.assert_array_equal(w, weights)
        assert moved.shape == x.shape and not np.allclose(moved, x)
        epochs.append(moved)
    assert not np.allclose(epochs[0], epochs[1])  # drawn anew every epoch
    (again, _, _), = [tuple(t.numpy() for t in batch) for batch in make(5)]
    np.testing.assert_array_equal(again, epochs[0])  # and repeatably by seed


def test_jittered_refuses_features_and_bad_amounts():
    features = data.to_dataset(np.zeros((4, 8), "float32"), np.zeros(4, "int64"), batch_size=2)
    with pytest.raises(ValueError, match=r"jitter moves images \(batch, height, width, channels\), not features"):
        data.jittered(features, 0.1)
    with pytest.raises(ValueError, match="Received: jitter=0.5"):
        data.jittered(features, 0.5)
