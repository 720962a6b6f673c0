import json
import os

import keras
import numpy as np
import pytest

from keras_transfer import data, heads, training
from keras_transfer.surgery import backbone_of, layer_index


def _splits(rng, n=36, size=32, classes=3):
    y = (np.arange(n) % classes).astype("int32")
    # class-dependent colour so there is something to learn
    x = np.clip(rng.normal(60 + 60 * y[:, None, None, None], 25, (n, size, size, 3)), 0, 255).astype("uint8")
    return data.split(data.ImageSet(x, y, [f"c{i}" for i in range(classes)]), 0.25, 0.0, seed=0)


def _recipe(**kw):
    base = dict(head_epochs=2, fine_tune_epochs=2, frozen="block3_pool", batch_size=8, verbose=0, patience=None)
    return training.Recipe(**{**base, **kw})


def _vgg(num_classes=3, **kw):
    return training.build_model("vgg16", num_classes, weights=None, input_size=32, removed=3, width=8, **kw)


def _train(rng, cache, seed=1, feature_cache=None, **recipe):
    keras.utils.set_random_seed(seed)
    model = _vgg()
    initial = [w.copy() for w in model.get_weights()]
    training.fine_tune(model, _splits(rng), _recipe(cache_features=cache, seed=seed, **recipe), cache=feature_cache)
    return model, initial


def test_cached_path_gives_the_same_model_as_the_plain_path():
    a, initial = _train(np.random.default_rng(0), cache=False)
    b, _ = _train(np.random.default_rng(0), cache=True)
    changed = [not np.allclose(w0, w) for w0, w in zip(initial, a.get_weights())]
    assert sum(changed) >= 4, "training must move the head and the unfrozen convs"
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["top_down", "photo"])
def test_augmented_cached_training_equals_training_on_the_same_views_end_to_end(kind):
    cache = training.FeatureCache()
    a, initial = _train(np.random.default_rng(0), cache=False, augment=kind, augment_views=4)
    b, _ = _train(np.random.default_rng(0), cache=True, feature_cache=cache, augment=kind, augment_views=4)
    assert len(cache) >= 4  # one entry per view of the training images, and the validation images
    changed = [not np.allclose(w0, w) for w0, w in zip(initial, a.get_weights())]
    assert sum(changed) >= 4, "training must move the head and the unfrozen convs"
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
    plain, _ = _train(np.random.default_rng(0), cache=True)
    assert not np.allclose(plain.get_weights()[-2], b.get_weights()[-2])  # the views did change training


def test_augmented_views_are_computed_once_and_shared_by_runs():
    cache = training.FeatureCache()
    _train(np.random.default_rng(0), cache=True, feature_cache=cache, augment="top_down", augment_views=8)
    misses = cache.misses
    _train(np.random.default_rng(0), cache=True, feature_cache=cache, augment="top_down", augment_views=8)
    assert cache.misses == misses and cache.hits >= 9  # 8 views + validation, read again


def test_test_time_augmentation_averages_the_views(rng):
    from keras_transfer.views import Views

    model = _vgg()
    head = model.get_layer("head")  # a fresh head answers 1/3 everywhere: give it weights that tell images apart
    head.set_weights([rng.normal(0, 1e-3, w.shape).astype("float32") for w in head.get_weights()])
    x = rng.integers(0, 255, (5, 32, 32, 3)).astype("uint8")
    tta = training.predict_classes(model, x, views=Views("top_down", 8))
    turned = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    every = turned + [t[:, :, ::-1] for t in turned]  # the 8 symmetries of the square, in another order
    manual = np.mean([training.predict_classes(model, np.ascontiguousarray(t)) for t in every], axis=0)
    np.testing.assert_allclose(np.log(tta), np.log(manual), rtol=1e-3, atol=1e-3)
    assert not np.allclose(np.log(tta), np.log(training.predict_classes(model, x)), atol=1e-2)


def test_runs_are_repeatable_with_a_seed():
    a, _ = _train(np.random.default_rng(0), cache=True, seed=5)
    b, _ = _train(np.random.default_rng(0), cache=True, seed=5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_split_model_cuts_at_the_last_cut_point_below_k():
    model = _vgg()
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
    model = _vgg()
    training.fine_tune(model, _splits(rng), _recipe(), cache=cache)
    # train + val at block3_pool from the images; the head stage's top (block4_pool) extended from them
    assert (cache.misses, cache.extended) == (4, 2)


def test_a_head_trained_before_from_the_same_start_is_reused(rng):
    splits = _splits(rng)

    def head_weights(cache, **kw):
        keras.utils.set_random_seed(5)  # the same head start
        model = _vgg()
        history = training.fine_tune(model, splits, _recipe(fine_tune_epochs=0, **kw), cache=cache)
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
    other_dropout = _vgg(dropout=0.5)  # so does the head's architecture, weights alike
    training.fine_tune(other_dropout, splits, _recipe(fine_tune_epochs=0), cache=cache)
    assert cache.heads.hits == 1


def test_reduced_learning_rate_instead_of_freezing(rng):
    keras.utils.set_random_seed(0)
    model = _vgg()
    base = backbone_of(model)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}
    training.fine_tune(model, _splits(rng), _recipe(head_epochs=0, transferred_lr_scale=0.0, fine_tune_learning_rate=0.05))
    after = {layer.name: layer.get_weights() for layer in base.layers}
    # scale 0: layers [:k] get no update, the rest do
    for name in ("block1_conv1", "block2_conv2"):
        for w0, w1 in zip(before[name], after[name]):
            np.testing.assert_array_equal(w0, w1)
    assert not np.allclose(before["block4_conv1"][0], after["block4_conv1"][0])
    assert all(layer.trainable for layer in base.layers)


@pytest.mark.parametrize("bn_inference", [True, False])
def test_batchnorm_keeps_its_statistics_in_inference_mode_and_learns_them_when_trained(rng, bn_inference):
    keras.utils.set_random_seed(0)
    model = training.build_model("mobilenet_v2", 3, weights=None, input_size=32, removed=0)
    base = backbone_of(model)
    norms = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    top, bottom = norms[-1], norms[0]  # fine-tuning below freezes every layer before top
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in (top, bottom)}
    training.fine_tune(model, _splits(rng), _recipe(head_epochs=0, frozen=layer_index(base, top.name),
                                                    bn_inference=bn_inference, fine_tune_learning_rate=0.05))
    for w0, w1 in zip(before[bottom.name], bottom.get_weights()):  # frozen: never changes
        np.testing.assert_array_equal(w0, w1)
    moved = [not np.array_equal(w0, w1) for w0, w1 in zip(before[top.name], top.get_weights())]
    assert moved == ([False] * 4 if bn_inference else [True] * 4)  # gamma, beta, moving mean, moving variance


def test_train_batchnorm_option_reaches_the_recipe():
    from keras_transfer.config import RecipeConfig

    assert RecipeConfig().make(seed=0).bn_inference is True
    assert RecipeConfig(train_batchnorm=True).make(seed=0).bn_inference is False


def test_binary_auxiliary_head_trains_through_the_recipe(rng):
    model = _vgg(head="binary_auxiliary")
    histories = training.fine_tune(model, _splits(rng), _recipe())
    assert "val_binary_loss" in histories["fine_tune"]
    metrics = training.evaluate(model, _splits(rng).val)
    assert 0 <= metrics["accuracy"] <= 1


def test_evaluate_reports_per_class_metrics(rng):
    model = _vgg()
    s = _splits(rng)
    metrics = training.evaluate(model, s.val)
    assert set(metrics["per_class"]) == {"c0", "c1", "c2"}
    assert np.sum(metrics["confusion_matrix"]) == len(s.val)


class _Kill(keras.callbacks.Callback):
    """Stands in for SIGKILL: stop training after ``n`` epochs in all (across stages)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            raise KeyboardInterrupt


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, rng):
    run = str(tmp_path / "run")
    s = _splits(rng)
    recipe = _recipe(head_epochs=2, fine_tune_epochs=3)
    keras.utils.set_random_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training.fine_tune(_vgg(), s, recipe, run_dir=run, callbacks=[_Kill(4)])  # 2 head epochs, dies after fine-tune epoch 2
    state = json.load(open(os.path.join(run, "state.json")))
    assert state["head"] == "done" and "fine_tune" not in state
    assert os.path.exists(os.path.join(run, "backup", "fine_tune", "latest.weights.h5"))
    model = _vgg()
    histories = training.fine_tune(model, s, recipe, run_dir=run, resume=True)
    assert "head" not in histories  # finished stage loaded, not retrained
    assert len(histories["fine_tune"]["loss"]) == 1  # epochs 1-2 restored, only epoch 3 ran
    state = json.load(open(os.path.join(run, "state.json")))
    assert state["head"] == state["fine_tune"] == "done"
    assert not os.path.exists(os.path.join(run, "backup", "fine_tune"))
    assert len(open(os.path.join(run, "fine_tune.csv")).read().splitlines()) == 1 + 3


def test_low_cuts_are_not_cached():
    model = _vgg()
    base = backbone_of(model)
    # a step: the prefix forward + 3x the rest (VGG16 through block4_pool here)
    assert training.saved_fraction(model, layer_index(base, "block1_conv2")) < 0.1
    assert training.split_model(model, layer_index(base, "block1_conv2") + 1) is None
    assert training.split_model(model, layer_index(base, "block2_pool") + 1) is None
    assert 0.35 < training.saved_fraction(model, layer_index(base, "block3_pool")) < 0.45  # 761 / (761 + 3 x 377)
    assert training.split_model(model, layer_index(base, "block3_pool") + 1)[2] == "block3_pool"


def test_features_too_big_for_the_cache_are_not_computed(caplog):
    caplog.set_level("INFO", logger="keras_transfer")
    s = _splits(np.random.default_rng(0))
    recipe = training.Recipe(head_epochs=1, fine_tune_epochs=0, batch_size=8, verbose=0, patience=None,
                             normalize=False, linear_probe=False)  # nothing computes features outside the cache
    cache = training.FeatureCache(max_bytes=1000, disk=False)  # (with a disk cache they go there: test_disk_cache)
    training.fine_tune(_vgg(), s, recipe, cache=cache)
    assert (cache.misses, len(cache)) == (0, 0)
    assert "would not fit the feature cache" in caplog.text


def test_compiled_inference_does_not_keep_models_alive():
    import gc

    model = _vgg()
    training.batched_call(model, np.zeros((3, 32, 32, 3), "uint8"))
    assert len(training._compiled_calls) >= 1
    del model
    gc.collect()
    assert len(training._compiled_calls) == 0  # tuner trials build many models: each must be freed


def test_callbacks_see_and_save_the_classifier_when_features_are_cached(tmp_path, rng):
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model, tuple(self.model.input_shape)))
            self.last = [w.copy() for w in self.model.get_weights()]

    path = str(tmp_path / "checkpoint.keras")
    model, s, spy = _vgg(), _splits(rng), Spy()
    histories = training.fine_tune(model, s, _recipe(keep_best=False),
                                   callbacks=[spy, keras.callbacks.ModelCheckpoint(path)])
    assert len(seen) == 4 and all(m is model and shape == (None, 32, 32, 3) for m, shape in seen)
    assert histories["fine_tune"]["loss"]  # both stages trained on cached features (block5_pool, block3_pool)
    reloaded = keras.saving.load_model(path)  # the classifier at the last epoch's end
    for a, b in zip(reloaded.get_weights(), spy.last):
        np.testing.assert_array_equal(a, b)


def test_a_callback_can_stop_cached_training():
    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    histories = training.fine_tune(_vgg(), _splits(np.random.default_rng(0)), _recipe(head_epochs=3, fine_tune_epochs=3),
                                   callbacks=[StopAfterOne()])
    assert len(histories["head"]["loss"]) == 1 and len(histories["fine_tune"]["loss"]) == 1


def test_a_stage_trains_on_streamed_data_like_on_arrays(rng):
    """Streams (tf.data, for data that does not fit in memory) go through the same stages: the
    head's features are standardised and probed from the stream, with the same statistics as
    from the same images in memory; a stream of unknown size is refused with the fix."""
    import tensorflow as tf

    splits = _splits(rng)
    streams = data.Streams(tf.data.Dataset.from_tensor_slices((splits.train.images, splits.train.labels)),
                           tf.data.Dataset.from_tensor_slices((splits.val.images, splits.val.labels)),
                           splits.class_names)
    recipe = _recipe(cache_features=False)
    keras.utils.set_random_seed(5)
    model = _vgg(dropout=0.0)
    histories = training.fine_tune(model, streams, recipe)
    assert set(histories) == {"head", "fine_tune"} and len(histories["fine_tune"]["val_accuracy"]) == 2
    norm = heads.feature_norm(model)
    keras.utils.set_random_seed(5)
    in_memory = _vgg(dropout=0.0)  # the same initial backbone
    training.init_head(in_memory, splits, recipe)
    np.testing.assert_allclose(norm.get_weights()[0], heads.feature_norm(in_memory).get_weights()[0], rtol=1e-4)
    assert 0 <= training.evaluate(model, splits.val)["accuracy"] <= 1
    unknown = streams.train.filter(lambda x, y: True)  # a filter hides the size
    with pytest.raises(ValueError, match="size of train is unknown"):
        training.fine_tune(_vgg(), data.Streams(unknown, None, splits.class_names), recipe)


def test_a_backup_neither_of_whose_copies_can_be_read_is_named(tmp_path):
    from keras_transfer.training.callbacks import Backup

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((4, 2), "float32"), np.array([0, 1, 0, 1])
    backup = str(tmp_path / "backup")

    class Stop(keras.callbacks.Callback):  # a run killed after its second epoch's backup
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[Backup(backup, double_checkpoint=True), Stop()])
    saved = [os.path.join(backup, f) for f in os.listdir(backup) if ".weights.h5" in f]
    assert len(saved) == 2  # the newest and the one before
    for path in saved:
        open(path, "wb").write(open(path, "rb").read()[:100])
    with pytest.raises(ValueError, match=f"{backup} cannot be read .*damaged or cut short. Delete {backup}"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[Backup(backup, double_checkpoint=True)])


def test_a_frozen_backbone_under_a_pooling_head_is_cached_pooled_with_the_same_training(rng):
    """The head pools first and has no weights before its pooling: its stage keeps C floats an
    image (block4_pool at 32 px: 2x2x512 -> 512), and trains as on the whole maps."""
    s = _splits(rng)
    model = _vgg()
    plan = training.plan_stage(model, s, _recipe(), "head", 2, len(backbone_of(model).layers))
    assert plan.x_train.shape == (len(s.train), 1, 1, 512) and "block4_pool+gap" in plan.how
    assert "2.0 KB an image" in plan.how  # 512 float32s (the maps: 2 x 2 x 512, 8 KB)
    results = []
    for cache in (True, False):
        keras.utils.set_random_seed(1)
        model = _vgg()
        training.fine_tune(model, s, _recipe(frozen="all", cache_features=cache))
        results.append(training.predict_classes(model, s.val.images))
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)


def test_a_stage_ends_with_its_best_epochs_weights_and_reports_that_epochs_metrics(rng):
    """Early stopping on: the stage keeps the epoch of the lowest validation loss (restored at the
    end even when no stop came), and the history's kept metrics are what those weights score."""
    from keras_transfer.training import best_epoch

    s = _splits(rng)

    class Spoil(keras.callbacks.Callback):  # the last epoch starts from scrambled weights: it is the worst
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.model.set_weights([np.random.default_rng(9).normal(0, 1, w.shape).astype(w.dtype)
                                        for w in self.model.get_weights()])

    model = _vgg()
    recipe = _recipe(head_epochs=3, fine_tune_epochs=0, patience=5, cache_features=False)
    history = training.fine_tune(model, s, recipe, callbacks=[Spoil()])["head"]
    kept = best_epoch.kept_metrics(history)
    assert kept["epoch"] != 2 and not history["val_loss"][2] <= kept["val_loss"]  # (worse, or NaN)
    scored = training.evaluate(model, s.val)["accuracy"]
    assert scored == pytest.approx(kept["val_accuracy"])
    # early stopping off: the last epoch is kept, and reported
    off = training.fine_tune(_vgg(), s, _recipe(head_epochs=3, fine_tune_epochs=0, patience=None), callbacks=[Spoil()])
    assert best_epoch.kept_metrics(off["head"], early_stopping=False)["epoch"] == 2


def test_the_head_stage_is_cached_pooled_in_bfloat16_too(rng):
    """A mixed policy adds a cast beside the head's pooling; the pooled cache still applies."""
    from keras_transfer import precision

    with precision.using("bfloat16", backbone="vgg16"):
        model = _vgg()
        plan = training.plan_stage(model, _splits(rng), _recipe(), "head", 1, len(backbone_of(model).layers))
    assert "block4_pool+gap" in plan.how and plan.x_train.shape[1:] == (1, 1, 512)
    assert plan.x_train.dtype == np.float32  # the means are kept in float32 (init_head's statistics)


def test_a_run_started_before_the_kept_epoch_rule_resumes_with_the_head_loss_it_recorded(rng, tmp_path):
    """state.json of an earlier version holds only head_val_loss: fine-tuning is still judged against it."""
    import json

    from keras_transfer.training import two_stage

    state = two_stage._StageState(str(tmp_path), resume=False)
    state.values["head_val_loss"] = 0.30
    model = _vgg()
    before = [w.copy() for w in model.get_weights()]
    history = {"val_loss": [0.50], "val_accuracy": [0.9]}  # fine-tuning ended worse than the head
    model.set_weights([w + 1 for w in before])
    two_stage._keep_best(model, "fine_tune", history, _recipe(patience=3), state, before)
    assert history["kept_head_weights"] is True
    np.testing.assert_array_equal(model.get_weights()[0], before[0])
    json.dumps(state.values)  # what is written to state.json stays JSON
