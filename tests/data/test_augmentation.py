import numpy as np
import pytest

from keras_transfer import data
from keras_transfer.data.augmentation import Views, kind_for


def test_top_down_views_are_the_eight_flips_and_turns(rng):
    x = rng.integers(0, 255, (3, 6, 6, 3)).astype("float32")
    views = Views("top_down", 8)
    got = [views.apply(x, v).numpy() for v in range(8)]
    want = [x, x[:, :, ::-1], x[:, ::-1], np.rot90(x, 2, axes=(1, 2))]  # the axes kept first
    transposed = x.transpose(0, 2, 1, 3)
    want += [transposed, np.rot90(x, 1, axes=(1, 2)), np.rot90(x, -1, axes=(1, 2)), transposed[:, ::-1, ::-1]]
    for v, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g, w, err_msg=f"view {v}")
    assert len({g.tobytes() for g in got}) == 8


def test_each_image_gets_its_own_view(rng):
    x = rng.integers(0, 255, (4, 5, 5, 3)).astype("float32")
    mixed = Views("top_down", 8).apply(x, np.array([0, 1, 2, 5])).numpy()
    np.testing.assert_array_equal(mixed[0], x[0])
    np.testing.assert_array_equal(mixed[1], x[1][:, ::-1])
    np.testing.assert_array_equal(mixed[2], x[2][::-1])
    np.testing.assert_array_equal(mixed[3], np.rot90(x[3]))


def test_photo_view_zero_is_the_image_and_the_others_differ(rng):
    x = rng.integers(0, 255, (2, 16, 16, 3)).astype("float32")
    views = Views("photo", 4, seed=3)
    np.testing.assert_allclose(views.apply(x, 0).numpy(), x, atol=1e-4)
    others = [views.apply(x, v).numpy() for v in range(1, 4)]
    assert all(not np.allclose(o, x) and o.min() >= 0 and o.max() <= 255 for o in others)
    np.testing.assert_array_equal(views.apply(x, 2).numpy(), Views("photo", 4, seed=3).apply(x, 2).numpy())
    assert not np.allclose(views.apply(x, 2).numpy(), Views("photo", 4, seed=4).apply(x, 2).numpy())


def test_bad_kinds_and_counts_are_refused():
    with pytest.raises(ValueError, match="top_down views number 1 to 8. Received: count=9"):
        Views("top_down", 9)
    with pytest.raises(ValueError, match="Received: kind='rotate'"):
        Views("rotate")
    with pytest.raises(ValueError, match="must be square"):
        Views("top_down", 2).apply(np.zeros((1, 4, 6, 3), "float32"), 1)


def test_solar_cells_get_top_down_views():
    assert kind_for("elpv") == kind_for("elpv_4class") == "top_down"
    assert kind_for("fashion_mnist") == kind_for(None) == "photo"


def test_to_dataset_draws_one_view_per_image_per_epoch_alike_from_images_and_from_cached_views(rng):
    x = rng.integers(0, 255, (12, 4, 4, 3)).astype("uint8")
    y = np.arange(12)
    views = Views("top_down", 8)
    stack = [views.apply(x.astype("float32"), v).numpy() for v in range(8)]
    from_images = data.to_dataset(x, y, 5, shuffle=True, seed=2, views=views)
    from_cache = data.to_dataset(stack, y, 5, shuffle=True, seed=2, views=views)
    seen = []
    for _ in range(3):  # epochs
        a = [(xa.numpy(), ya.numpy()) for xa, ya in from_images]
        b = [(xb.numpy(), yb.numpy()) for xb, yb in from_cache]
        for (xa, ya), (xb, yb) in zip(a, b):
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(xa, xb)
        images = np.concatenate([xa for xa, _ in a])
        labels = np.concatenate([ya for _, ya in a])
        assert sorted(labels) == list(range(12))  # every image once per epoch
        drawn = [next(v for v in range(8) if np.array_equal(images[i], stack[v][label]))
                 for i, label in enumerate(labels)]
        seen.append(drawn)
    assert seen[0] != seen[1] and len(set(sum(seen, []))) > 3  # new draws each epoch, several views


def _centroid(image):
    ys, xs = np.nonzero(image[..., 0] > 100)
    return ys.mean(), xs.mean()


def test_jitter_shifts_and_zooms_each_image_by_its_own_draw_once(rng):
    """A bright square lands where the drawn zoom and shift put it: output pixel ``p`` reads the
    input at ``(p - c) / (1 + zoom) + c + shift * side`` (so a positive zoom enlarges, a positive
    shift moves the content up or left), each image by its own draw; one resampling keeps the
    square's edges sharp; the same seed gives the same images."""
    import tensorflow as tf

    from keras_transfer.data.augmentation import jitter

    n, side, amount, seed = 6, 40, 0.1, tf.constant([3, 4])
    x = np.zeros((n, side, side, 3), "float32")
    x[:, 16:24, 14:22] = 250.0
    out = jitter(x, amount, seed).numpy()
    zoom, shift_y, shift_x, _ = tf.random.stateless_uniform([n, 4], seed, minval=-amount, maxval=amount).numpy().T
    c = (side - 1) / 2
    y0, x0 = _centroid(x[0])
    for i in range(n):
        want = ((y0 - c - shift_y[i] * side) * (1 + zoom[i]) + c, (x0 - c - shift_x[i] * side) * (1 + zoom[i]) + c)
        np.testing.assert_allclose(_centroid(out[i]), want, atol=0.75, err_msg=f"image {i}")
        area = np.sum(out[i, ..., 0] > 100)
        assert abs(area - 64 * (1 + zoom[i]) ** 2) <= 4 * 8 * (1 + zoom[i]) + 1  # within a pixel's rim of the box
    assert len({_centroid(o) for o in out}) == n  # every image its own draw
    np.testing.assert_array_equal(out, jitter(x, amount, seed).numpy())
    assert not np.allclose(out, jitter(x, amount, tf.constant([3, 5])).numpy())


def test_jitter_changes_contrast_about_the_mean_and_stays_in_range(rng):
    import tensorflow as tf

    from keras_transfer.data.augmentation import jitter

    flat = np.full((4, 12, 12, 3), 90.0, "float32")  # no edges to move, no spread to change
    np.testing.assert_allclose(jitter(flat, 0.2, tf.constant([0, 1])).numpy(), flat, atol=1e-3)
    x = rng.integers(0, 256, (8, 12, 12, 3)).astype("float32")
    out = jitter(x, 0.25, tf.constant([0, 2])).numpy()
    assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), x.mean(axis=(1, 2, 3)), rtol=0.1)


@pytest.mark.parametrize("amount", [0.0, -0.05, 0.3])
def test_jitter_amounts_outside_its_range_are_refused(amount):
    import tensorflow as tf

    from keras_transfer.data.augmentation import jitter

    with pytest.raises(ValueError, match=f"above 0 and at most 0.25 \\(0: off\\). Received: jitter={amount}"):
        jitter(np.zeros((1, 4, 4, 3), "float32"), amount, tf.constant([0, 0]))
