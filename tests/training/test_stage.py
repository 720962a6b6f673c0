"""One stage: planned, fitted, on arrays or streams; what it keeps."""


import keras
import numpy as np
import pytest
from training_helpers import small_recipe, small_splits, small_vgg, train_small

from keras_transfer import data, training
from keras_transfer.models import heads
from keras_transfer.models.surgery import backbone_of, layer_index


def test_runs_are_repeatable_with_a_seed():
    a, _ = train_small(np.random.default_rng(0), cache=True, seed=5)
    b, _ = train_small(np.random.default_rng(0), cache=True, seed=5)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_reduced_learning_rate_instead_of_freezing(rng):
    keras.utils.set_random_seed(0)
    model = small_vgg()
    base = backbone_of(model)
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}
    training.fine_tune(model, small_splits(rng), small_recipe(head_epochs=0, transferred_lr_scale=0.0, fine_tune_learning_rate=0.05))
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
    training.fine_tune(model, small_splits(rng), small_recipe(head_epochs=0, frozen=layer_index(base, top.name),
                                                    bn_inference=bn_inference, fine_tune_learning_rate=0.05))
    for w0, w1 in zip(before[bottom.name], bottom.get_weights()):  # frozen: never changes
        np.testing.assert_array_equal(w0, w1)
    moved = [not np.array_equal(w0, w1) for w0, w1 in zip(before[top.name], top.get_weights())]
    assert moved == ([False] * 4 if bn_inference else [True] * 4)  # gamma, beta, moving mean, moving variance


def test_train_batchnorm_option_reaches_the_recipe():
    from keras_transfer.runs.config import RecipeConfig

    assert RecipeConfig().make(seed=0).bn_inference is True
    assert RecipeConfig(bn_inference=False).make(seed=0).bn_inference is False


def test_binary_auxiliary_head_trains_through_the_recipe(rng):
    model = small_vgg(head="binary_auxiliary")
    histories = training.fine_tune(model, small_splits(rng), small_recipe())
    assert "val_binary_loss" in histories["fine_tune"]
    metrics = training.evaluate(model, small_splits(rng).val)
    assert 0 <= metrics["accuracy"] <= 1


def test_a_callback_can_stop_cached_training():
    class StopAfterOne(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    histories = training.fine_tune(small_vgg(), small_splits(np.random.default_rng(0)), small_recipe(head_epochs=3, fine_tune_epochs=3),
                                   callbacks=[StopAfterOne()])
    assert len(histories["head"]["loss"]) == 1 and len(histories["fine_tune"]["loss"]) == 1


def test_a_stage_trains_on_streamed_data_like_on_arrays(rng):
    """Streams (tf.data, for data that does not fit in memory) go through the same stages: the
    head's features are standardised and probed from the stream, with the same statistics as
    from the same images in memory; a stream of unknown size is refused with the fix."""
    import tensorflow as tf

    splits = small_splits(rng)
    streams = data.Streams(tf.data.Dataset.from_tensor_slices((splits.train.images, splits.train.labels)),
                           tf.data.Dataset.from_tensor_slices((splits.val.images, splits.val.labels)),
                           splits.class_names)
    recipe = small_recipe(cache_features=False)
    keras.utils.set_random_seed(5)
    model = small_vgg(dropout=0.0)
    histories = training.fine_tune(model, streams, recipe)
    assert set(histories) == {"head", "fine_tune"} and len(histories["fine_tune"]["val_accuracy"]) == 2
    norm = heads.feature_norm(model)
    keras.utils.set_random_seed(5)
    in_memory = small_vgg(dropout=0.0)  # the same initial backbone
    training.Stage(in_memory, splits, recipe, "head", 0, 0).init_head()
    np.testing.assert_allclose(norm.get_weights()[0], heads.feature_norm(in_memory).get_weights()[0], rtol=1e-4)
    assert 0 <= training.evaluate(model, splits.val)["accuracy"] <= 1
    unknown = streams.train.filter(lambda x, y: True)  # a filter hides the size
    with pytest.raises(ValueError, match="size of train is unknown"):
        training.fine_tune(small_vgg(), data.Streams(unknown, None, splits.class_names), recipe)


def test_a_stage_ends_with_its_best_epochs_weights_and_reports_that_epochs_metrics(rng):
    """Early stopping on: the stage keeps the epoch of the lowest validation loss (restored at the
    end even when no stop came), and the history's kept metrics are what those weights score."""
    from keras_transfer.training import best_epoch

    s = small_splits(rng)

    class Spoil(keras.callbacks.Callback):  # the last epoch starts from scrambled weights: it is the worst
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                self.model.set_weights([np.random.default_rng(9).normal(0, 1, w.shape).astype(w.dtype)
                                        for w in self.model.get_weights()])

    model = small_vgg()
    recipe = small_recipe(head_epochs=3, fine_tune_epochs=0, patience=5, cache_features=False)
    history = training.fine_tune(model, s, recipe, callbacks=[Spoil()])["head"]
    kept = best_epoch.kept_metrics(history)
    assert kept["epoch"] != 2 and not history["val_loss"][2] <= kept["val_loss"]  # (worse, or NaN)
    scored = training.evaluate(model, s.val)["accuracy"]
    assert scored == pytest.approx(kept["val_accuracy"])
    # early stopping off: the last epoch is kept, and reported
    off = training.fine_tune(small_vgg(), s, small_recipe(head_epochs=3, fine_tune_epochs=0, patience=None), callbacks=[Spoil()])
    assert best_epoch.kept_metrics(off["head"], early_stopping=False)["epoch"] == 2


def test_without_validation_images_every_epoch_trains_and_the_log_says_why(rng, caplog):
    """Early stopping watches the validation loss: without validation images there is none, so the
    stage trains all its epochs, keeps the last, and says so (the recipe's patience is not silently dropped)."""
    keras.utils.set_random_seed(0)
    model = small_vgg()
    x = small_splits(rng)
    no_val = data.split(data.ImageSet(np.concatenate([x.train.images, x.val.images]),
                                      np.concatenate([x.train.labels, x.val.labels]), x.class_names), 0.0, 0.0, seed=0)
    stage = training.Stage(model, no_val, small_recipe(patience=1, head_learning_rate=0.0), "head", 3,
                           len(backbone_of(model).layers))
    with caplog.at_level("INFO", logger="keras_transfer.training"):
        history = stage.fit(stage.plan())
    assert len(history["loss"]) == 3  # a zero rate: no epoch is better, yet nothing stops
    assert "head: no validation images, so early stopping (patience 1) has nothing to watch: all 3 epochs train" \
        in caplog.text
