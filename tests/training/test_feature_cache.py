"""The frozen-prefix feature cache: cached training equals end-to-end training, prefixes shared and extended, bounded."""


import keras
import numpy as np
import pytest
from training_helpers import small_recipe, small_splits, small_vgg, train_small

from keras_transfer import training
from keras_transfer.models.surgery import backbone_of, layer_index


def test_cached_path_gives_the_same_model_as_the_plain_path():
    a, initial = train_small(np.random.default_rng(0), cache=False)
    b, _ = train_small(np.random.default_rng(0), cache=True)
    changed = [not np.allclose(w0, w) for w0, w in zip(initial, a.get_weights())]
    assert sum(changed) >= 4, "training must move the head and the unfrozen convs"
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["top_down", "photo"])
def test_augmented_cached_training_equals_training_on_the_same_views_end_to_end(kind):
    cache = training.FeatureCache()
    a, initial = train_small(np.random.default_rng(0), cache=False, augment=kind, augment_views=4)
    b, _ = train_small(np.random.default_rng(0), cache=True, feature_cache=cache, augment=kind, augment_views=4)
    assert len(cache) >= 4  # one entry per view of the training images, and the validation images
    changed = [not np.allclose(w0, w) for w0, w in zip(initial, a.get_weights())]
    assert sum(changed) >= 4, "training must move the head and the unfrozen convs"
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    plain, _ = train_small(np.random.default_rng(0), cache=True)
    assert not np.allclose(plain.get_weights()[-2], b.get_weights()[-2])  # the views did change training


def test_augmented_views_are_computed_once_and_shared_by_runs():
    cache = training.FeatureCache()
    train_small(np.random.default_rng(0), cache=True, feature_cache=cache, augment="top_down", augment_views=8)
    misses = cache.misses
    train_small(np.random.default_rng(0), cache=True, feature_cache=cache, augment="top_down", augment_views=8)
    assert cache.misses == misses and cache.hits >= 9  # 8 views + validation, read again


def test_split_model_cuts_at_the_last_cut_point_below_k():
    model = small_vgg()
    base = backbone_of(model)
    prefix, suffix, cut = training.split_model(model, layer_index(base, "block3_pool") + 1)
    assert cut == "block3_pool"
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(suffix(prefix(x)), model(x), rtol=1e-5, atol=1e-6)
    assert {id(v) for v in suffix.weights} <= {id(v) for v in model.weights}
    assert training.split_model(model, 1) is None  # only the input layer is frozen


def test_feature_cache_is_shared_by_equal_prefixes_and_bounded():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 32, 32, 3)).astype("uint8")
    cache = training.FeatureCache()
    first = training.build_model("vgg16", 2, weights="hed", input_size=32, width=4)
    second = training.build_model("vgg16", 2, weights="hed", input_size=32, removed=2, width=4)
    k = layer_index(backbone_of(first), "block3_pool") + 1
    for model in (first, second):
        prefix, _, cut = training.split_model(model, k)
        feats = cache.features(prefix, cut, images)
    assert (cache.misses, cache.hits) == (1, 1) and feats.shape == (6, 4, 4, 256)
    other = rng.integers(0, 255, (6, 32, 32, 3)).astype("uint8")
    cache.features(prefix, cut, other)
    assert cache.misses == 2
    tiny = training.FeatureCache(max_bytes=feats.nbytes)
    tiny.features(prefix, cut, images)
    tiny.features(prefix, cut, other)
    assert len(tiny) == 1 and tiny.nbytes <= feats.nbytes  # the older entry was evicted


def test_a_deeper_cut_is_extended_from_a_cached_shallower_one():
    images = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3)).astype("uint8")
    model = training.build_model("vgg16", 2, weights="hed", input_size=32, width=4)
    base = backbone_of(model)
    cache = training.FeatureCache()
    for cut in ("block3_pool", "block4_pool"):  # shallow first, as warm_cache orders them
        prefix, _, name = training.split_model(model, layer_index(base, cut) + 1)
        extended = cache.features(prefix, name, images)
    assert (cache.misses, cache.extended) == (2, 1)
    direct = training.FeatureCache().features(prefix, name, images)
    np.testing.assert_allclose(extended, direct, rtol=1e-4, atol=1e-4)
    # other weights below the cut: never extended from the first model's features
    other = training.build_model("vgg16", 2, weights=None, input_size=32, width=4)
    prefix, _, name = training.split_model(other, layer_index(backbone_of(other), "block5_pool") + 1)
    cache.features(prefix, name, images)
    assert cache.extended == 1


def test_extension_across_inception_branches_matches_the_direct_features():
    """InceptionV3's cut points join parallel branches: the bridge between two runs them all."""
    images = np.random.default_rng(0).integers(0, 255, (3, 75, 75, 3)).astype("uint8")
    keras.utils.set_random_seed(0)
    model = training.build_model("inception_v3", 2, weights=None, input_size=75, width=4)
    base = backbone_of(model)
    cache = training.FeatureCache()
    for cut in ("mixed2", "mixed5"):
        prefix, _, name = training.split_model(model, layer_index(base, cut) + 1)
        extended = cache.features(prefix, name, images)
    assert name == "mixed5" and cache.extended == 1
    direct = training.FeatureCache().features(prefix, name, images)
    np.testing.assert_allclose(extended, direct, rtol=1e-4, atol=1e-4)


def test_fine_tune_computes_the_backbone_once_for_both_stages(rng):
    cache = training.FeatureCache()
    model = small_vgg()
    training.fine_tune(model, small_splits(rng), small_recipe(), cache=cache)
    # train + val at block3_pool from the images; the head stage's top (block4_pool) extended from them
    assert (cache.misses, cache.extended) == (4, 2)


def test_a_head_trained_before_from_the_same_start_is_reused(rng):
    splits = small_splits(rng)

    def head_weights(cache, **kw):
        keras.utils.set_random_seed(5)  # the same head start
        model = small_vgg()
        history = training.fine_tune(model, splits, small_recipe(fine_tune_epochs=0, **kw), cache=cache)
        return model.get_layer("head").get_weights(), history["head"]

    cache = training.FeatureCache()
    first, history = head_weights(cache)
    again, reused_history = head_weights(cache, frozen="block2_pool", fine_tune_learning_rate=0.5)
    assert cache.heads.hits == 1 and reused_history == history  # fine-tuning settings do not matter
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    retrained, _ = head_weights(training.FeatureCache())  # what the reuse stands for
    for a, b in zip(first, retrained):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    head_weights(cache, head_learning_rate=0.01)  # a head-stage setting does
    keras.utils.set_random_seed(5)
    other_dropout = small_vgg(dropout=0.5)  # so does the head's architecture, weights alike
    training.fine_tune(other_dropout, splits, small_recipe(fine_tune_epochs=0), cache=cache)
    assert cache.heads.hits == 1


def test_low_cuts_are_not_cached():
    model = small_vgg()
    base = backbone_of(model)
    # a step: the prefix forward + 3x the rest (VGG16 through block4_pool here)
    assert training.saved_fraction(model, layer_index(base, "block1_conv2")) < 0.1
    assert training.split_model(model, layer_index(base, "block1_conv2") + 1) is None
    assert training.split_model(model, layer_index(base, "block2_pool") + 1) is None
    assert 0.35 < training.saved_fraction(model, layer_index(base, "block3_pool")) < 0.45  # 761 / (761 + 3 x 377)
    assert training.split_model(model, layer_index(base, "block3_pool") + 1)[2] == "block3_pool"


def test_features_too_big_for_the_cache_are_not_computed(caplog):
    caplog.set_level("INFO", logger="keras_transfer")
    s = small_splits(np.random.default_rng(0))
    recipe = training.Recipe(head_epochs=1, fine_tune_epochs=0, batch_size=8, verbose=0, patience=None,
                             normalize=False, linear_probe=False)  # nothing computes features outside the cache
    cache = training.FeatureCache(max_bytes=1000, disk=False)  # (with a disk cache they go there: test_disk_cache)
    training.fine_tune(small_vgg(), s, recipe, cache=cache)
    assert (cache.misses, len(cache)) == (0, 0)
    assert "would not fit the feature cache" in caplog.text


def test_callbacks_see_and_save_the_classifier_when_features_are_cached(tmp_path, rng):
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model, tuple(self.model.input_shape)))
            self.last = [w.copy() for w in self.model.get_weights()]

    path = str(tmp_path / "checkpoint.keras")
    model, s, spy = small_vgg(), small_splits(rng), Spy()
    histories = training.fine_tune(model, s, small_recipe(keep_best=False),
                                   callbacks=[spy, keras.callbacks.ModelCheckpoint(path)])
    assert len(seen) == 4 and all(m is model and shape == (None, 32, 32, 3) for m, shape in seen)
    assert histories["fine_tune"]["loss"]  # both stages trained on cached features (block5_pool, block3_pool)
    reloaded = keras.saving.load_model(path)  # the classifier at the last epoch's end
    for a, b in zip(reloaded.get_weights(), spy.last):
        np.testing.assert_array_equal(a, b)


def test_a_frozen_backbone_under_a_pooling_head_is_cached_pooled_with_the_same_training(rng):
    """The head pools first and has no weights before its pooling: its stage keeps C floats an
    image (block4_pool at 32 px: 2x2x512 -> 512), and trains as on the whole maps."""
    s = small_splits(rng)
    model = small_vgg()
    plan = training.Stage(model, s, small_recipe(), "head", 2, len(backbone_of(model).layers)).plan()
    assert plan.x_train.shape == (len(s.train), 1, 1, 512) and "block4_pool+gap" in plan.how
    assert "2.0 KB an image" in plan.how  # 512 float32s (the maps: 2 x 2 x 512, 8 KB)
    results = []
    for cache in (True, False):
        keras.utils.set_random_seed(1)
        model = small_vgg()
        training.fine_tune(model, s, small_recipe(frozen="all", cache_features=cache))
        results.append(training.predict_classes(model, s.val.images))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_the_head_stage_is_cached_pooled_in_bfloat16_too(rng):
    """A mixed policy adds a cast beside the head's pooling; the pooled cache still applies."""
    from keras_transfer.training import precision

    with precision.using("bfloat16", backbone="vgg16"):
        model = small_vgg()
        plan = training.Stage(model, small_splits(rng), small_recipe(), "head", 1, len(backbone_of(model).layers)).plan()
    assert "block4_pool+gap" in plan.how and plan.x_train.shape[1:] == (1, 1, 512)
    assert plan.x_train.dtype == np.float32  # the means are kept in float32 (init_head's statistics)


def test_features_on_disk_say_which_image_each_head_start_row_comes_from(tmp_path, monkeypatch):
    """The disk path samples the same images in every view, leaves out the unreadable ones, and
    its groups name each row's image: what the probe's grouped cross-validation keeps together."""
    import types

    from keras_transfer.data.streaming import DiskFeatures
    from keras_transfer.training import feature_cache

    monkeypatch.setattr(feature_cache, "HEAD_INIT_SAMPLE", 12)
    n, labels = 30, np.arange(30) % 3
    ok = np.ones(n, bool)
    ok[7] = False

    def on_disk(name, view):  # each image's maps hold 100 * view + its index
        path = str(tmp_path / f"{name}.npy")
        np.save(path, np.broadcast_to((100 * view + np.arange(n, dtype="float32"))[:, None, None, None],
                                      (n, 2, 2, 3)).copy())
        return DiskFeatures(path, ok)

    splits = types.SimpleNamespace(train=types.SimpleNamespace(labels=labels), val=types.SimpleNamespace(labels=labels))
    x, y, groups, x_val, y_val = feature_cache.head_start_features(
        None, splits, small_recipe(seed=3), [on_disk("v0", 0), on_disk("v1", 1)], on_disk("val", 0))
    assert x.shape == (24, 1, 1, 3) and len(groups) == len(y) == 24  # 12 images, view after view
    np.testing.assert_array_equal(groups[:12], groups[12:])  # the same images in both views
    assert 7 not in groups and len(set(groups)) == 12
    np.testing.assert_array_equal(x[:, 0, 0, 0], 100 * (np.arange(24) // 12) + groups)  # the row is that image's
    np.testing.assert_array_equal(y, labels[groups])
    assert np.bincount(y, minlength=3).min() == 8  # stratified: 4 images of each class, twice
    assert x_val.shape == (12, 1, 1, 3) and np.array_equal(y_val, labels[x_val[:, 0, 0, 0].astype(int)])
