import keras
import numpy as np
import pytest

from keras_transfer import export, training
from keras_transfer.export import heatmaps


def _red_detector(size=16):
    """A flat model that answers 'red' (class 1) in proportion to how red the image is: a 1x1 conv
    reading red minus the other channels, GAP, then a fixed Dense."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(1, 1, activation="relu", name="redness")
    x = conv(inputs)
    x = keras.layers.Conv2D(2, 1, activation="relu", name="maps")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax", name="classes")
    model = keras.Model(inputs, dense(x))
    conv.set_weights([np.array([1.0, -0.5, -0.5], "float32").reshape(1, 1, 3, 1) / 255.0, np.zeros(1, "float32")])
    model.get_layer("maps").set_weights([np.array([[1.0, 0.0]], "float32").reshape(1, 1, 1, 2), np.zeros(2, "float32")])
    dense.set_weights([np.array([[-4.0, 4.0], [0.0, 0.0]], "float32"), np.array([2.0, -2.0], "float32")])
    return model


def _red_square(corner, size=16, side=5):
    image = np.full((size, size, 3), 40, "uint8")
    y, x = corner
    image[y:y + side, x:x + side] = (255, 0, 0)
    return image


@pytest.mark.parametrize("corner", [(0, 0), (9, 2), (4, 10)])
def test_grad_cam_highlights_the_pixels_that_decide_the_label(corner):
    model = _red_detector()
    image = _red_square(corner)
    heat, probs = heatmaps.grad_cam(model, image[None], class_ids=[1])
    heat = np.asarray(heat)[0]
    inside = np.zeros(heat.shape, bool)
    inside[corner[0]:corner[0] + 5, corner[1]:corner[1] + 5] = True
    assert heat.max() == pytest.approx(1.0) and heat[inside].min() > 0.99 and heat[~inside].max() < 0.01
    assert np.unravel_index(heat.argmax(), heat.shape) in set(zip(*np.nonzero(inside)))


def test_grad_cam_explains_the_predicted_class_by_default():
    model = _red_detector()
    image = _red_square((3, 3), side=12)  # mostly red: predicted 'red'
    heat, probs = heatmaps.grad_cam(model, image[None])
    assert int(np.argmax(probs[0])) == 1 and np.asarray(heat).max() == pytest.approx(1.0)


def test_grad_cam_on_a_package_model_uses_the_nested_backbones_last_map(rng):
    import tensorflow as tf

    model = training.build_model("vgg16", 3, weights=None, input_size=32, removed=3, width=0)
    head = model.get_layer("head")
    head.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in head.get_weights()])
    x = rng.integers(0, 255, (2, 32, 32, 3)).astype("float32")
    features, rest = heatmaps.feature_split(model)
    assert tuple(features.output.shape) == (None, 2, 2, 512)  # block4_pool of a 32 px VGG16 (stride 16)
    heat, probs = heatmaps.grad_cam(model, x, class_ids=[0, 2])
    np.testing.assert_allclose(probs, training.predict_classes(model, x), rtol=1e-4, atol=1e-6)
    # the same map by hand, from the model's own layers: preprocess -> backbone -> head
    maps = model.get_layer("vgg16")(model.get_layer("preprocess")(x), training=False)
    last = head.get_layer("predictions")
    before_last = keras.Model(head.inputs, last.input)
    with tf.GradientTape() as tape:
        tape.watch(maps)
        z = before_last(maps, training=False) @ last.kernel + last.bias  # the logits
        score = tf.stack([z[0, 0] - tf.reduce_logsumexp(z[0, 1:]),
                          z[1, 2] - tf.reduce_logsumexp(z[1, :2])])  # log-odds of classes 0 and 2
    g = tape.gradient(score, maps)
    cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(g, axis=(1, 2), keepdims=True) * maps, -1)).numpy()
    cam /= np.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)
    np.testing.assert_allclose(np.asarray(heat), cam, atol=1e-4)


def test_a_model_trained_in_bfloat16_is_explained_in_float32_as_its_export_is(tmp_path, rng):
    from keras_transfer.training import precision

    with precision.using("bfloat16"):
        model = training.build_model("vgg16", 3, weights=None, input_size=32, removed=3, width=0)
    head = model.get_layer("head")
    head.set_weights([rng.normal(0, 0.05, w.shape).astype("float32") for w in head.get_weights()])
    path = str(tmp_path / "model.keras")
    model.save(path)
    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    explainer = export.Explainer(path)
    probs, heat = explainer(pixels)
    want_heat, want_probs = heatmaps.grad_cam(precision.as_float32(model), pixels[None].astype("float32"))
    np.testing.assert_allclose(heat, np.asarray(want_heat)[0], atol=1e-6)
    np.testing.assert_allclose(probs, np.asarray(want_probs)[0], atol=1e-6)
    bf16_heat, _ = heatmaps.grad_cam(model, pixels[None].astype("float32"))
    assert np.abs(np.asarray(bf16_heat)[0] - heat).max() > 1e-3  # so this test tells the two apart


def test_a_model_without_a_feature_map_is_refused():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    with pytest.raises(ValueError, match="4-D"):
        heatmaps.grad_cam(model, np.zeros((1, 4), "float32"))


def test_overlay_keeps_the_image_size_and_paints_the_hot_region_red():
    image = np.full((40, 40, 3), 128, "uint8")
    heat = np.zeros((4, 4), "float32")
    heat[0, 0] = 1.0
    out = heatmaps.overlay(image, heat)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert out[2, 2, 0] > out[2, 2, 2] and out[38, 38, 2] > out[38, 38, 0]  # jet: hot red, cold blue
