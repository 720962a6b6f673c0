"""The named recipes: the default does not diverge, starts at the linear probe, keeps the
better stage; the tutorial's and keras.io's are one argument away; per-variable rates."""
import math

import keras
import numpy as np
import pytest

from keras_transfer import data, training
from keras_transfer.models import heads, losses
from keras_transfer.models.surgery import backbone_of
from keras_transfer.training import recipes


@pytest.fixture(scope="module")
def digits():
    """A small real dataset: scikit-learn's handwritten digits, 12 per class at 32 px."""
    return data.split(data.builtin("digits", 32, limit=12, seed=0), 0.25, 0.0, seed=0)


def _model(splits, recipe, weights="hed"):
    return training.build_model("vgg16", splits.num_classes, weights=weights, input_size=32, removed=3,
                                **recipe.head_options())


def test_default_first_epoch_loss_stays_below_twice_chance(digits):
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=1, batch_size=16, verbose=0)
    histories = training.fine_tune(_model(digits, recipe), digits, recipe)
    chance = math.log(digits.num_classes)
    assert histories["head"]["loss"][0] < 2 * chance
    assert histories["fine_tune"]["loss"][0] < 2 * chance


def test_the_head_starts_at_the_linear_probe(digits):
    from keras_transfer.training.linear_probe import fit_linear

    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=0, verbose=0)
    model = _model(digits, recipe)
    training.Stage(model, digits, recipe, "head", 1, 0).init_head()
    prefix = training.prefix_model(model)
    train = heads.pooled_features(model, training.batched_call(prefix, digits.train.images))
    val = heads.pooled_features(model, training.batched_call(prefix, digits.val.images))
    np.testing.assert_allclose(train.mean(axis=0), 0, atol=1e-3)  # standardised by the training images' statistics
    std = train.std(axis=0)
    assert np.all(std <= 1 + 1e-3) and np.median(std) == pytest.approx(1, abs=1e-3)  # nearly constant ones: floored
    probe = fit_linear(train, digits.train.labels, digits.num_classes, val, digits.val.labels)
    head_acc = training.evaluate(model, digits.val)["accuracy"]
    assert head_acc == pytest.approx(probe.val_accuracy)
    assert head_acc > 0.5  # ten classes: chance is 0.1


def test_without_validation_images_the_head_starts_at_the_cross_validated_probe(digits, monkeypatch, caplog):
    """A run trained on all its labelled images (``--val-split 0``) still chooses the probe's C, by
    cross-validation on the training images, with every view of an image in one fold."""
    from keras_transfer.training import stage

    no_val = data.split(data.builtin("digits", 32, limit=12, seed=0), 0.0, 0.0, seed=0)
    assert not no_val.has_val
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=0, augment="top_down", augment_views=2, verbose=0)
    seen = {}
    real = stage.fit_linear

    def spy(*args, **kwargs):
        seen.update(kwargs, labels=args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(stage, "fit_linear", spy)
    with caplog.at_level("INFO", logger="keras_transfer.training.linear_probe"):
        training.Stage(_model(no_val, recipe), no_val, recipe, "head", 1, 0).init_head()
    n = len(no_val.train)
    np.testing.assert_array_equal(seen["labels"], np.tile(no_val.train.labels, 2))  # view after view
    np.testing.assert_array_equal(seen["groups"], np.tile(np.arange(n), 2))  # an image's views: one group
    assert "3-fold cross-validated accuracy on the training images" in caplog.text


def test_fine_tuning_that_never_beats_the_head_keeps_the_heads_weights(digits):
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=1, fine_tune_learning_rate=50.0, backbone_lr_scale=1.0,
                            warmup_fraction=0.0, decay=False, verbose=0, patience=None)
    model = _model(digits, recipe)
    seen = {}

    class AfterHead(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            seen.setdefault("head", [w.copy() for w in model.get_weights()])

    histories = training.fine_tune(model, digits, recipe, callbacks=[AfterHead()])
    assert histories["fine_tune"].get("kept_head_weights") is True
    for a, b in zip(seen["head"], model.get_weights()):
        np.testing.assert_array_equal(a, b)


class _LastRawWeights(keras.callbacks.Callback):
    """The head's weights after each training step, before any averaging swaps them out."""

    def on_train_batch_end(self, batch, logs=None):
        self.raw = [w.copy() for w in self.model.get_layer("head").get_weights()]


class _StopAfterFirstFineTuningEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.epochs = getattr(self, "epochs", 0) + 1
        if self.epochs == 2:  # the head stage's one epoch, then fine-tuning's first of three
            self.model.stop_training = True


@pytest.mark.parametrize("ema_momentum, stopped", [(None, False), (0.9, False), (0.9, True)])
def test_weight_averaging_is_what_is_validated_and_kept(digits, ema_momentum, stopped):
    """With ``ema_momentum`` a stage ends with the moving average of its weights, not its last
    step's, and the validation loss it logs for its last epoch is that of the weights it keeps,
    also when a callback stops it early (Keras's own swap then ended on the last step's)."""
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=3 if stopped else 2, batch_size=16, verbose=0,
                            patience=None, keep_best=False, ema_momentum=ema_momentum)
    model, raw = _model(digits, recipe), _LastRawWeights()
    histories = training.fine_tune(model, digits, recipe,
                                   callbacks=[raw] + ([_StopAfterFirstFineTuningEpoch()] if stopped else []))
    assert len(histories["fine_tune"]["val_loss"]) == (1 if stopped else 2)
    kept = model.get_layer("head").get_weights()
    differs = max(float(np.max(np.abs(a - b))) for a, b in zip(kept, raw.raw))
    if ema_momentum is None:
        assert differs == 0.0
    else:
        assert differs > 1e-4  # the average, not the last step
    probabilities = model.predict(digits.val.images, verbose=0)
    loss = losses.SparseSmoothedCrossentropy(recipe.label_smoothing)(digits.val.labels, probabilities)
    assert float(loss) == pytest.approx(histories["fine_tune"]["val_loss"][-1], rel=1e-4)


def test_weight_averaging_is_a_flag_of_train_and_a_momentum_of_one_is_refused(capsys):
    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    args = build_parser().parse_args(["train", "--dataset", "digits", "--ema-momentum", "0.99"])
    assert train_config(args).make_recipe().ema_momentum == 0.99
    assert train_config(build_parser().parse_args(["train", "--dataset", "digits"])).make_recipe().ema_momentum is None
    with pytest.raises(SystemExit):  # 1 would average nothing in: the weights would stay at their start
        build_parser().parse_args(["train", "--dataset", "digits", "--ema-momentum", "1"])
    assert "--ema-momentum: must be between 0.0 and 0.9999. Received: 1" in capsys.readouterr().err


def test_mixup_trains_on_blends_and_validates_on_the_plain_labels(digits):
    """Under ``mixup`` both stages fit one-hot blends (a higher training loss than on the plain
    labels: a blend's label is never certain), while validation still scores the real labels:
    its logged accuracy is the model's on the validation images."""
    losses_by_mixup = {}
    for mixup in (0.0, 0.4):
        recipe = recipes.recipe(head_epochs=2, fine_tune_epochs=1, batch_size=16, verbose=0, patience=None,
                                keep_best=False, mixup=mixup)
        model = _model(digits, recipe)
        histories = training.fine_tune(model, digits, recipe)
        losses_by_mixup[mixup] = histories["head"]["loss"][-1]
        predicted = model.predict(digits.val.images, verbose=0).argmax(axis=1)
        assert float(np.mean(predicted == digits.val.labels)) == pytest.approx(
            histories["fine_tune"]["val_accuracy"][-1], abs=1e-6)
    assert losses_by_mixup[0.4] > losses_by_mixup[0.0] + 0.05


def test_mixup_is_a_flag_of_train_and_is_refused_where_it_cannot_apply(digits, capsys):
    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    assert train_config(build_parser().parse_args(["train", "--dataset", "digits", "--mixup", "0.2"])
                        ).make_recipe().mixup == 0.2
    assert train_config(build_parser().parse_args(["train", "--dataset", "digits"])).make_recipe().mixup == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--mixup", "-1"])
    assert "--mixup: must be between 0.0 and 10.0. Received: -1" in capsys.readouterr().err
    auxiliary = training.build_model("vgg16", digits.num_classes, weights=None, input_size=32, removed=3,
                                     head="binary_auxiliary", width=8)
    with pytest.raises(ValueError, match="mixup blends the labels of one output; the binary_auxiliary head has two"):
        training.fine_tune(auxiliary, digits, recipes.recipe(head_epochs=1, fine_tune_epochs=0, mixup=0.2, verbose=0))
    ordinal = training.build_model("vgg16", digits.num_classes, weights=None, input_size=32, removed=3,
                                   head="ordinal_auxiliary")
    with pytest.raises(ValueError, match="mixup blends the labels of one output; the ordinal_auxiliary head has two"):
        training.fine_tune(ordinal, digits, recipes.recipe(head_epochs=1, fine_tune_epochs=0, mixup=0.2, verbose=0))



@pytest.mark.parametrize("head", ["binary_auxiliary", "ordinal_auxiliary"])
def test_mixup_with_an_auxiliary_head_is_refused_before_any_work(head, digits, tmp_path, capsys, monkeypatch):
    """From Python before the probe runs, from the CLI before any image is read, and for a search."""
    import keras_transfer as kt
    from keras_transfer.cli.entry_point import main
    from keras_transfer.runs import config
    from keras_transfer.training import cut_probe

    monkeypatch.setattr(cut_probe, "recommend_for", lambda *a, **k: 1 / 0)  # the probe is work: never reached
    with pytest.raises(ValueError, match=f"the {head} head has two.*Received: mixup=0.2"):
        kt.Learner(digits, "vgg16", weights=None, head=head, mixup=0.2)
    out = tmp_path / "run"
    assert main(["train", "--head", head, "--data", str(tmp_path / "no such folder"), "--mixup", "0.2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mixup blends the labels of one output" in err and "Traceback" not in err
    assert not out.exists()
    with pytest.raises(ValueError, match=f"the {head} head has two"):  # a search that would try that head
        config.SearchConfig(recipe=config.RecipeConfig(mixup=0.2),
                            search=config.SearchSpaceConfig(head_kinds=("gap_dense", head)))


def test_the_auxiliary_heads_loss_share_is_a_fraction(capsys):
    """``--binary-weight`` is B in ``(1 - B)·class loss + B·second output's loss``: outside [0, 1] it
    is refused on the command line, with the flag named."""
    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    args = build_parser().parse_args(["train", "--dataset", "digits", "--head", "ordinal_auxiliary", "--binary-weight", "0.2"])
    assert (train_config(args).model.head, train_config(args).model.binary_weight) == ("ordinal_auxiliary", 0.2)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--binary-weight", "1.5"])
    assert "--binary-weight: must be between 0.0 and 1.0. Received: 1.5" in capsys.readouterr().err


def test_tutorial_and_keras_io_recipes_are_one_argument_away():
    tutorial = recipes.recipe("tutorial")
    assert (tutorial.width, tutorial.normalize, tutorial.head_optimizer) == (1024, False, "rmsprop")
    sgd = recipes.optimizer(tutorial, "fine_tune", steps=100)
    assert isinstance(sgd, keras.optimizers.SGD)
    assert float(sgd.learning_rate) == pytest.approx(1e-4) and sgd.momentum == 0.9 and not sgd.lr_scales
    guide = recipes.recipe("keras_io", head_epochs=2)
    assert (guide.frozen, guide.fine_tune_learning_rate, guide.dropout, guide.head_epochs) == (0, 1e-5, 0.2, 2)
    assert isinstance(recipes.optimizer(guide, "head", 10), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="Received: recipe='fastai'"):
        recipes.recipe("fastai")


def test_tutorial_recipe_trains_through_the_cli_config(tmp_path):
    from keras_transfer import runs
    from keras_transfer.runs import config as cfg

    config = cfg.TrainConfig(cfg.DataConfig(dataset="digits", input_size=32, limit_per_class=4),
                             cfg.ModelConfig(backbone="vgg16", weights=None, removed=3),
                             cfg.RecipeConfig(recipe="tutorial", head_epochs=1, fine_tune_epochs=1, verbose=0))
    recipe = config.make_recipe()
    assert recipe.fine_tune_optimizer == "sgd" and recipe.head_epochs == 1
    assert recipe.head_options() == {"width": 1024, "dropout": 0.0, "normalize": False}
    metrics = runs.train(config, str(tmp_path / "run"), progress=False)
    assert 0 <= metrics["accuracy"] <= 1


def test_stage_two_trains_the_backbone_at_a_lower_rate_than_the_head(digits):
    recipe = recipes.recipe(head_epochs=0, fine_tune_epochs=1, frozen="block4_conv1", verbose=0)
    model = _model(digits, recipe, weights=None)
    stage = training.Stage(model, digits, recipe, "fine_tune", 1, 12)  # layers [:12]: through block4_conv1
    stage.freeze()
    scales = stage.lr_scales()
    base = backbone_of(model)
    conv = base.get_layer("block4_conv2")
    assert scales[conv.kernel.path] == scales[conv.bias.path] == recipe.backbone_lr_scale < 1
    assert base.get_layer("block4_conv1").kernel.path not in scales  # frozen: not trained at all
    head_paths = {v.path for v in model.get_layer("head").trainable_weights}
    assert head_paths and not head_paths & set(scales)


@pytest.mark.parametrize("kind", ["adamw", "sgd", "rmsprop"])
def test_per_variable_rates_scale_the_step_not_the_gradient(kind):
    a, b, c = (keras.Variable(np.ones(3, "float32"), name=n) for n in "abc")
    recipe = recipes.recipe(weight_decay=0.1, warmup_fraction=0.0, decay=False,
                            fine_tune_optimizer=kind, fine_tune_learning_rate=0.1)
    opt = recipes.optimizer(recipe, "fine_tune", 10, {b.path: 0.1, c.path: 0.0})
    grads = [np.full(3, 2.0, "float32")] * 3
    opt.apply(grads, [a, b, c])
    step_a, step_b = 1 - a.numpy()[0], 1 - b.numpy()[0]
    assert step_b == pytest.approx(0.1 * step_a, rel=0.05)
    np.testing.assert_array_equal(c.numpy(), 1.0)  # rate 0: not even weight decay moves it


def test_smoothed_sparse_loss_equals_keras_categorical_with_smoothing():
    y = np.array([0, 2, 1])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], "float32")
    ours = losses.SparseSmoothedCrossentropy(0.1)(y, p)
    theirs = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y], p)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-6)


def test_none_is_a_value_where_a_field_has_one_and_is_refused_elsewhere():
    """``patience=None`` switches early stopping off from Python as ``--patience -1`` does from
    the CLI (it used to be dropped silently: early stopping stayed on at patience 3)."""
    from keras_transfer.runs import config

    assert recipes.recipe(patience=None).patience is None
    assert recipes.recipe().patience == 3
    assert recipes.recipe("keras_io").frozen == 0 and recipes.recipe("keras_io", frozen=None).frozen is None
    with pytest.raises(TypeError, match=r"None is not a value of dropout, width.*Received: dropout=None, width=None"):
        recipes.recipe("tutorial", width=None, dropout=None)
    # a flag not given keeps the named recipe's value; --patience -1 is None
    assert config.RecipeConfig(recipe="keras_io").make(0).frozen == 0
    assert config.RecipeConfig(recipe="tutorial").make(0).width == 1024
    assert config.RecipeConfig(patience=None).make(0).patience is None


def test_jitter_fine_tunes_on_moving_images_while_the_head_trains_on_cached_features(rng, caplog):
    """Cached features cannot move, so under jitter the fine-tuning stage trains on the images
    (where it would otherwise read cached features of its frozen prefix) and its batches are the
    jittered views; the head stage keeps its cache and its reuse key (jitter is not its field)."""
    from training_helpers import small_recipe, small_splits, small_vgg

    from keras_transfer.models.surgery import backbone_of, layer_index

    keras.utils.set_random_seed(0)
    model, splits = small_vgg(), small_splits(rng)
    base = backbone_of(model)
    k = layer_index(base, "block3_pool")
    still, moving = (small_recipe(augment="top_down", augment_views=4, jitter=j) for j in (0.0, 0.1))
    plans = {j: training.Stage(model, splits, r, "fine_tune", 1, k).plan() for j, r in ((0, still), (1, moving))}
    assert plans[0].how.startswith("on cached") and plans[0].fit_model is not model
    assert plans[1].how == splits.end_to_end and plans[1].fit_model is model
    head = {j: training.Stage(model, splits, r, "head", 1, len(base.layers)) for j, r in ((0, still), (1, moving))}
    assert head[1].plan().how.startswith("on cached")
    assert head[1].head_key() == head[0].head_key()
    stages = {j: training.Stage(model, splits, r, "fine_tune", 1, k) for j, r in ((0, still), (1, moving))}
    (plain, y0), = [(b[0].numpy(), b[1].numpy()) for b in stages[0].datasets(plans[1], 64)[0]]
    (moved, y1), = [(b[0].numpy(), b[1].numpy()) for b in stages[1].datasets(plans[1], 64)[0]]
    np.testing.assert_array_equal(y0, y1)  # the same images in the same order, with the same views drawn
    assert plain.shape == moved.shape and not np.allclose(plain, moved)
    np.testing.assert_allclose(moved.mean(axis=(1, 2, 3)), plain.mean(axis=(1, 2, 3)), rtol=0.15)
    caplog.clear()
    with caplog.at_level("INFO", logger="keras_transfer.training"):
        history = training.fine_tune(model, splits, moving)
    assert len(history["fine_tune"]["loss"]) == moving.fine_tune_epochs
    said = caplog.text  # said once, as the stage it is about starts (every stage is planned before the first trains)
    jitter = said.index("[fine_tune] jitter 0.1 moves the images every epoch, so the stage trains on them")
    assert said.count("[fine_tune] jitter") == 1
    assert said.rindex("[head] ") < jitter < said.index(f"[fine_tune] {moving.fine_tune_epochs} epoch(s)")


def _train_config(*flags):
    """``keras-transfer train --dataset digits FLAGS`` as the command line reads it."""
    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    return train_config(build_parser().parse_args(["train", "--dataset", "digits", *flags]))


def test_jitter_is_a_flag_of_train_and_is_refused_where_it_cannot_apply(tmp_path, capsys):
    from keras_transfer.cli.entry_point import build_parser, main

    parse = _train_config
    assert parse("--jitter", "0.05").make_recipe().jitter == 0.05
    assert parse().make_recipe().jitter == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--jitter", "0.3"])
    assert "--jitter: must be between 0.0 and 0.25. Received: 0.3" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at most 0.25 \\(0: off\\). Received: jitter=0.5"):
        recipes.recipe(jitter=0.5)
    out = tmp_path / "run"  # no fine-tuning: jitter would do nothing, refused before any image is read
    assert main(["train", "--data", str(tmp_path / "no such folder"), "--jitter", "0.05", "--fine-tune-epochs", "0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "jitter applies while fine-tuning, and fine_tune_epochs=0 leaves no fine-tuning" in err
    assert "Traceback" not in err and not out.exists()


def _drift(model, start):
    """The backbone's distance from ``start`` (its weights before training), over its trained variables."""
    now = backbone_of(model).get_weights()
    return math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(now, start)))


def test_l2_sp_keeps_the_fine_tuned_backbone_nearer_its_pretrained_weights(digits):
    """L2-SP pulls every trained backbone weight toward its value at the fine-tuning stage's start
    (the pretrained one): from the same start, data and batches, the stronger the pull the nearer
    it ends."""
    drifts = {}
    for strength in (0.0, 30.0, 100.0):
        keras.utils.set_random_seed(0)
        recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=3, batch_size=16, fine_tune_learning_rate=1e-3,
                                backbone_lr_scale=1.0, l2_sp=strength, patience=None, keep_best=False, verbose=0)
        model = _model(digits, recipe)
        training.Stage(model, digits, recipe, "head", 1, 0).init_head()
        start = backbone_of(model).get_weights()
        stage = training.Stage(model, digits, recipe, "fine_tune", 3, 0)
        stage.freeze()
        opt = recipes.optimizer(recipe, "fine_tune", 10, stage.lr_scales(), backbone=stage.backbone_paths())
        assert opt.anchor_decay == strength and set(opt.anchored) == (set(stage.backbone_paths()) if strength else set())
        training.fine_tune(model, digits, recipe)
        drifts[strength] = _drift(model, start)
    # (Keras builds the optimiser where an assign does not run: anchors assigned there stayed at 0 and
    # pulled the weights away from the start, the stronger the farther)
    assert drifts[0.0] > 0
    assert drifts[100.0] < 0.8 * drifts[30.0] < 0.8 * drifts[0.0]


def test_the_l2_sp_pull_is_the_gap_to_the_start_times_strength_and_rate():
    """One step without gradient: an anchored weight moves l2_sp x rate of the way back to where it
    started; a weight not anchored decays toward 0 at weight_decay x rate, as before."""
    anchored, free = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    opt = recipes.ScaledAdamW(learning_rate=0.1, weight_decay=0.5, anchored=[anchored.path], anchor_decay=2.0,
                              lr_scales={anchored.path: 0.5})
    opt.build([anchored, free])
    anchored.assign(np.full(3, 3.0, "float32"))  # moved 2 away from its start
    opt.apply([np.zeros(3, "float32")] * 2, [anchored, free])
    np.testing.assert_allclose(anchored.numpy(), 3.0 - 2.0 * 2.0 * 0.1 * 0.5)  # at its own (scaled) rate
    np.testing.assert_allclose(free.numpy(), 1.0 - 1.0 * 0.5 * 0.1)
    again = recipes.ScaledAdamW.from_config(opt.get_config())
    assert again.anchored == [anchored.path] and again.anchor_decay == 2.0


def test_l2_sp_is_a_flag_of_train_and_a_strength_out_of_range_is_refused(capsys):
    from keras_transfer.cli.entry_point import build_parser

    parse = _train_config
    assert parse("--l2-sp", "10").make_recipe().l2_sp == 10.0
    assert parse().make_recipe().l2_sp == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--l2-sp", "-1"])
    assert "--l2-sp: must be between 0.0 and 100.0. Received: -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use 0 \\(off\\) to 100.0, e.g. 10. Received: l2_sp=500"):
        recipes.recipe(l2_sp=500)
    # the head stage and a recipe without it build no anchors
    assert not recipes.optimizer(recipes.recipe(l2_sp=10), "head", 10, backbone=["x"]).anchored


def test_the_warm_up_fraction_sets_where_each_stage_reaches_its_peak_rate(digits):
    """The rates the optimiser applies, step by step, through a real two-stage run: from 0 they climb
    to the stage's rate over the warm-up's share of its steps, then fall; their sum does not move."""
    class Rates(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_begin(self, batch, logs=None):
            self.seen.append(float(self.model.optimizer.learning_rate))

    runs = {}
    for fraction in (0.1, 0.5):
        recipe = recipes.recipe(head_epochs=0, fine_tune_epochs=4, batch_size=16, fine_tune_learning_rate=1e-3,
                                warmup_fraction=fraction, cache_features=False, patience=None, keep_best=False,
                                verbose=0)  # uncached: the callbacks see the model that is fitted
        rates = Rates()
        training.fine_tune(_model(digits, recipe), digits, recipe, callbacks=[rates])
        runs[fraction] = np.array(rates.seen)
    steps = len(runs[0.1])
    assert steps == len(runs[0.5]) >= 8
    for fraction, seen in runs.items():
        peak = int(np.argmax(seen))
        assert seen[0] == 0.0 and peak == round(fraction * steps)
        assert seen[peak] == pytest.approx(1e-3) and np.all(np.diff(seen[:peak + 1]) > 0)
        assert np.all(np.diff(seen[peak:]) < 0)
    assert runs[0.5].sum() == pytest.approx(runs[0.1].sum(), rel=0.15)


def test_the_warm_up_is_a_flag_of_train_refused_out_of_range_or_where_the_rate_is_constant(capsys):
    from keras_transfer.cli.entry_point import build_parser

    assert _train_config("--warmup-fraction", "0.25").make_recipe().warmup_fraction == 0.25
    assert _train_config().make_recipe().warmup_fraction == 0.1
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--warmup-fraction", "0.7"])
    assert "--warmup-fraction: must be between 0.0 and 0.5. Received: 0.7" in capsys.readouterr().err
    with pytest.raises(ValueError, match="use 0 \\(no warm-up\\) to 0.5, e.g. 0.1. Received: warmup_fraction=-0.1"):
        recipes.recipe(warmup_fraction=-0.1)
    # the tutorial's constant rate would ignore it: refused before any image is read, naming the flag
    with pytest.raises(ValueError, match="warmup_fraction \\(--warmup-fraction\\) warms up the decaying schedule"):
        _train_config("--recipe", "tutorial", "--warmup-fraction", "0.2").check()
    assert recipes.recipe("tutorial").warmup_fraction == 0.0
