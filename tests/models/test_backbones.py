import h5py
import keras
import numpy as np
import pytest
from helpers import SMALL_SIZE

from keras_transfer.models import backbones
from keras_transfer.models.backbones import BACKBONES, build_base
from keras_transfer.models.layers import Preprocess


def test_table_lists_the_architectures_the_package_promises():
    assert set(backbones.list_backbones()) >= {
        "inception_v3", "vgg16", "vgg19", "resnet50", "mobilenet_v2",
        "densenet121", "efficientnet_b0", "xception",
    }


@pytest.mark.parametrize("name", list(BACKBONES))
def test_build_base_at_small_size(name, small_base):
    model = small_base(name)
    s = SMALL_SIZE[name]
    assert model.name == name
    assert tuple(model.input_shape) == (None, s, s, 3)
    assert len(model.output.shape) == 4  # include_top=False: a feature map
    assert backbones.backbone_for(model) is BACKBONES[name]


@pytest.mark.parametrize("name", list(BACKBONES))
def test_in_model_preprocessing_equals_keras_preprocess_input(name, rng):
    row = BACKBONES[name]
    x = rng.uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    expected = np.asarray(row.preprocess_input(x.copy()))
    got = keras.ops.convert_to_numpy(Preprocess(row.preprocess_mode)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_keras_application_names_are_recognised():
    m = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(32, 32, 3))
    assert backbones.backbone_for(m).name == "mobilenet_v2"
    with pytest.raises(ValueError, match="not a known backbone"):
        backbones.backbone_for(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="vgg16_gap_dense"))


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown backbone 'vgg61'.*vgg16.*inception_v3"):
        build_base("vgg61", weights=None)


def test_hed_weights_refused_for_other_backbones():
    with pytest.raises(ValueError, match="hed.*only vgg16"):
        build_base("resnet50", weights="hed", input_shape=(32, 32, 3))


@pytest.mark.parametrize("name,size", [("inception_v3", 74), ("vgg16", 31), ("xception", 70)])
def test_input_below_minimum_is_refused(name, size):
    with pytest.raises(ValueError, match=f"at least {BACKBONES[name].min_size}"):
        build_base(name, weights=None, input_shape=(size, size, 3))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_row_declares_a_largest_input_it_refuses_beyond(name):
    from keras_transfer.runs.config import MAX_INPUT_SIZE

    row = BACKBONES[name]
    assert row.default_size <= row.max_size <= MAX_INPUT_SIZE  # the CLI's bound admits every row's
    with pytest.raises(ValueError, match=rf"at most at {row.max_size}x{row.max_size}.*Received: input_shape"):
        build_base(name, weights=None, input_shape=(row.max_size + 1, row.min_size, 3))


def test_include_top_needs_the_imagenet_size():
    with pytest.raises(ValueError, match="224x224"):
        build_base("vgg16", weights=None, include_top=True, input_shape=(32, 32, 3))


def test_include_top_keeps_the_1000_way_classifier():
    model = build_base("mobilenet_v2", weights=None, include_top=True)
    assert tuple(model.output.shape) == (None, 1000)
    assert model.layers[-1].name == "predictions"


def test_hed_weights_equal_the_h5_arrays():
    model = build_base("vgg16", weights="hed", input_shape=(32, 32, 3))
    path = backbones.hed_weights_path()
    checked = 0
    with h5py.File(path, "r") as f:
        for block, n in enumerate((2, 2, 3, 3, 3), 1):
            for i in range(n):
                group = f[f"block{block}/layers/conv2d" + (f"_{i}" if i else "") + "/vars"]
                kernel, bias = model.get_layer(f"block{block}_conv{i + 1}").get_weights()
                np.testing.assert_array_equal(kernel, group["0"][()])
                np.testing.assert_array_equal(bias, group["1"][()])
                checked += 1
    assert checked == 13


def test_hed_first_layer_filters_are_not_random():
    # Pretrained first-layer filters are smooth colour blobs and edges: neighbouring taps
    # correlate strongly, unlike Glorot-random filters.
    def smoothness(kernel):
        k = kernel.reshape(3, 3, -1)
        return np.corrcoef(k[:, :-1].ravel(), k[:, 1:].ravel())[0, 1]

    hed = build_base("vgg16", weights="hed", input_shape=(32, 32, 3)).get_layer("block1_conv1").get_weights()[0]
    rnd = build_base("vgg16", weights=None, input_shape=(32, 32, 3)).get_layer("block1_conv1").get_weights()[0]
    assert smoothness(hed) > 0.3 > 0.15 > abs(smoothness(rnd))


def test_imagenet_weights_come_through_keras_cache_path(tmp_path, monkeypatch):
    """weights='imagenet' is Keras's own download-and-cache code; here the 'download' returns
    a file the test wrote, and the weights must land in the model."""
    source = build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    source.get_layer("block1_conv1").set_weights([np.full((3, 3, 3, 64), 0.5, "float32"), np.arange(64, dtype="float32")])
    fake = tmp_path / "vgg16_notop.weights.h5"
    source.save_weights(fake)
    requested = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        requested.append((fname, origin, kwargs.get("cache_subdir")))
        return str(fake)

    import keras.src.utils.file_utils as file_utils

    monkeypatch.setattr(file_utils, "get_file", fake_get_file)
    model = build_base("vgg16", weights="imagenet", input_shape=(32, 32, 3))
    (fname, origin, subdir), = requested
    assert "notop" in fname and origin.startswith("https://") and subdir == "models"
    np.testing.assert_array_equal(model.get_layer("block1_conv1").get_weights()[1], np.arange(64))


def test_weights_file_round_trip(tmp_path, small_base):
    path = tmp_path / "vgg16.weights.h5"
    small_base("vgg16").save_weights(path)
    model = build_base("vgg16", weights=str(path), input_shape=(32, 32, 3))
    for a, b in zip(model.get_weights(), small_base("vgg16").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_file_for_another_architecture_is_refused(tmp_path, small_base):
    path = tmp_path / "vgg19.weights.h5"
    small_base("vgg19").save_weights(path)
    with pytest.raises(ValueError, match=r"vgg19\.weights\.h5.*does not fit vgg16"):
        build_base("vgg16", weights=str(path), input_shape=(32, 32, 3))


def test_missing_weights_file_is_named():
    with pytest.raises(FileNotFoundError, match="no/such.weights.h5"):
        build_base("vgg16", weights="no/such.weights.h5", input_shape=(32, 32, 3))


@pytest.mark.parametrize("name", ["vgg16", "resnet50", "efficientnet_b0"])
def test_stochastic_depth_is_refused_where_it_cannot_be_set(name):
    """VGG16 has no residual blocks; Keras builds ResNet50 without stochastic depth and fixes B0's
    at 0.2: none can take a rate, and a rate given is refused, not ignored."""
    with pytest.raises(ValueError, match=f"drop_path: {name}'s stochastic depth cannot be set "
                                         r"\(it can for: efficientnet_lite0, efficientnet_lite1, efficientnet_lite2\)"):
        build_base(name, weights=None, input_shape=(32, 32, 3), drop_path=0.2)
