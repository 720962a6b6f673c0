import keras
import numpy as np
import pytest

from keras_transfer.models import heads
from keras_transfer.models.backbones import BACKBONES, build_base
from keras_transfer.models.surgery import chop


@pytest.fixture(scope="module")
def vgg():
    return build_base("vgg16", weights=None, input_shape=(32, 32, 3))


def test_gap_dense_is_the_tutorials_head(vgg):
    model = heads.gap_dense(chop(vgg, removed=3), 3, width=16, dropout=0.2, normalize=False)
    assert [layer.name for layer in model.layers] == ["images", "preprocess", "vgg16", "head"]
    head = model.get_layer("head")
    assert [layer.name for layer in head.layers] == ["features", "gap", "head_dense", "head_dropout", "predictions"]
    assert head.get_layer("head_dense").units == 16
    assert tuple(model.output.shape) == (None, 3)
    assert head.get_layer("predictions").dtype_policy.compute_dtype == "float32"


def test_model_takes_raw_pixels_and_preprocesses_inside(vgg, rng):
    model = heads.gap_dense(vgg, 2, width=4)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    features = vgg(BACKBONES["vgg16"].preprocess_input(x.copy()))
    np.testing.assert_allclose(model.predict(x, verbose=0), model.get_layer("head")(features), rtol=1e-4, atol=1e-5)
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("head", list(heads.HEADS))
def test_saved_classifier_reloads_with_equal_predictions(head, tmp_path, rng):
    if head == "keep_classifier":
        base = build_base("mobilenet_v2", weights=None, include_top=True)
    else:
        base = build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    model = heads.build_classifier(base, 4, head=head, width=8)
    size = base.input_shape[1]
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    a, b = model.predict(x, verbose=0), reloaded.predict(x, verbose=0)
    a, b = heads.class_probabilities(model, a), heads.class_probabilities(reloaded, b)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_keep_classifier_stacks_on_the_imagenet_softmax():
    base = build_base("mobilenet_v2", weights=None, include_top=True)
    model = heads.keep_classifier(base, 5, width=8)
    names = [layer.name for layer in model.get_layer("head").layers]
    assert names == ["features", "log_probabilities", "classifier_norm", "head_dense", "predictions"]
    assert tuple(model.output.shape) == (None, 5)


def test_keep_classifier_log_layernorm_removes_softmax_scale(rng):
    # log(softmax(z)) = z - logsumexp(z): LayerNormalization of it equals LayerNorm of z.
    z = rng.normal(size=(3, 1000)).astype("float32") * 4
    probs = keras.ops.softmax(z)
    from keras_transfer.models.layers import LogProbabilities

    norm = keras.layers.LayerNormalization()
    np.testing.assert_allclose(norm(LogProbabilities()(probs)), norm(z), atol=1e-3)


def test_keep_classifier_needs_include_top(vgg):
    with pytest.raises(ValueError, match="include_top=True"):
        heads.keep_classifier(vgg, 3)


def test_class_partition_is_seeded_and_balanced():
    a = heads.class_partition(7, seed=3)
    assert a == heads.class_partition(7, seed=3)
    assert sorted(a) == [0, 0, 0, 1, 1, 1, 1]
    assert any(heads.class_partition(7, seed=s) != a for s in range(4, 10))


def test_binary_auxiliary_trains_with_weighted_losses(vgg, rng):
    model = heads.binary_auxiliary(vgg, 4, width=8, seed=5, binary_weight=0.4)
    assert set(model.output) == {"class", "binary"}
    args = heads.compile_args(model)
    assert args["loss_weights"] == {"class": pytest.approx(0.6), "binary": pytest.approx(0.4)}
    mapping = heads.partition_of(model).mapping
    assert mapping == heads.class_partition(4, 5)
    labels = np.array([0, 1, 2, 3, 3, 2])
    y = heads.targets(model, labels)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y["binary"])[:, 0], np.array(mapping)[labels])
    model.compile(optimizer="sgd", **args)
    x = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    history = model.fit(x, y, epochs=1, verbose=0)
    assert {"class_loss", "binary_loss"} <= set(history.history)


def test_ordinal_auxiliary_regresses_each_class_rank_and_keeps_it_in_the_file(vgg, rng, tmp_path):
    """Class k of n has the target k/(n-1) on the second output ("rank"), scored by its mean
    absolute error (accuracy against 1/3 is always 0); the mapping survives a save and reload."""
    model = heads.ordinal_auxiliary(vgg, 4, binary_weight=0.3)
    assert set(model.output) == {"class", "rank"}
    assert heads.auxiliary_head_name(model) == "ordinal_auxiliary"
    labels = np.array([0, 1, 2, 3, 3, 2])
    y = heads.targets(model, labels)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y["rank"])[:, 0], [0, 1 / 3, 2 / 3, 1, 1, 2 / 3], atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y["class"]), labels)
    args = heads.compile_args(model, label_smoothing=0.1)
    assert args["loss_weights"] == {"class": pytest.approx(0.7), "rank": pytest.approx(0.3)}
    assert args["metrics"] == {"class": ["accuracy"], "rank": ["mae"]}
    model.compile(optimizer="sgd", **args)
    x = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    history = model.fit(x, y, epochs=1, verbose=0).history
    assert {"class_loss", "rank_loss", "rank_mae", "class_accuracy"} <= set(history)
    model.save(tmp_path / "ordinal.keras")
    reloaded = keras.saving.load_model(tmp_path / "ordinal.keras")
    assert heads.partition_of(reloaded).mapping == pytest.approx([0, 1 / 3, 2 / 3, 1])
    assert heads.compile_args(reloaded)["loss_weights"]["rank"] == pytest.approx(0.3)
    np.testing.assert_allclose(heads.class_probabilities(reloaded, reloaded(x)),
                               heads.class_probabilities(model, model(x)), atol=1e-6)
    with pytest.raises(ValueError, match="binary_weight must be in \\[0, 1\\]"):
        heads.ordinal_auxiliary(vgg, 4, binary_weight=1.5)


@pytest.mark.parametrize("head", ["binary_auxiliary", "ordinal_auxiliary"])
def test_an_auxiliary_heads_linear_softmax_is_the_one_the_probe_starts(vgg, head):
    """Without a hidden layer the class softmax of an auxiliary head sees the pooled features
    alone, so training starts it at the linear probe as gap_dense's; with one, nothing is probed."""
    linear = heads.build_classifier(vgg, 4, head=head, width=0)
    assert heads.linear_classifier(linear) is linear.get_layer("head").get_layer("class")
    assert heads.linear_classifier(heads.build_classifier(vgg, 4, head=head, width=8)) is None
    assert heads.linear_classifier(heads.gap_dense(vgg, 4, width=8)) is None


@pytest.mark.parametrize("bad", [1, 0, 2.5, True])
def test_bad_class_count_is_refused(vgg, bad):
    with pytest.raises(ValueError, match="num_classes"):
        heads.gap_dense(vgg, bad)


def test_unknown_head_is_refused(vgg):
    with pytest.raises(ValueError, match="Unknown head 'mlp'.*gap_dense"):
        heads.build_classifier(vgg, 3, head="mlp")


@pytest.mark.parametrize("head", ["gap_dense", "binary_auxiliary", "ordinal_auxiliary"])
def test_mixed_precision_keeps_the_outputs_in_float32(head, rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        base = build_base("vgg16", weights=None, input_shape=(32, 32, 3))
        model = heads.build_classifier(base, 3, head=head, width=8)
        assert base.get_layer("block1_conv1").compute_dtype == "float16"
        out = model(rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
        probs = heads.class_probabilities(model, out)
        assert probs.dtype == "float32"
        np.testing.assert_allclose(keras.ops.convert_to_numpy(probs).sum(axis=1), 1.0, rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_default_gap_dense_is_the_default_recipes_linear_head(vgg):
    from keras_transfer.training import recipes

    model = heads.gap_dense(vgg, 3)
    head = model.get_layer("head")
    assert [layer.name for layer in head.layers] == ["features", "gap", "feature_norm", "head_dropout", "predictions"]
    assert heads.linear_classifier(model) is head.get_layer("predictions")
    np.testing.assert_array_equal(head.get_layer("predictions").kernel.numpy(), 0)  # starts at the uniform distribution
    assert recipes.recipe().head_options() == {"width": 0, "dropout": 0.2, "normalize": True}
    with pytest.raises(ValueError, match="Received: width=-1"):
        heads.gap_dense(vgg, 3, width=-1)
