"""Choosing the compute precision, and training/caching in bfloat16."""
import keras
import numpy as np
import pytest

from keras_transfer import data, training
from keras_transfer.models.surgery import layer_index
from keras_transfer.training import precision, recipes


@pytest.mark.parametrize("bf16_ok", [True, False])
@pytest.mark.parametrize("gpu,flags,expected", [
    (True, set(), "float16"),
    (False, {"avx2", "avx512_bf16"}, "bfloat16"),
    (False, {"amx_bf16", "amx_tile"}, "bfloat16"),
    (False, {"avx2", "avx512f"}, "float32"),
])
def test_auto_picks_by_device_and_cpu_flags(gpu, flags, expected, bf16_ok, monkeypatch):
    monkeypatch.setattr(precision, "AUTO_BF16_ON_CPU", bf16_ok)  # what the quality benchmark decides
    if expected == "bfloat16" and not bf16_ok:
        expected = "float32"
    assert precision.choose("auto", gpu=gpu, flags=flags) == expected


def test_auto_keeps_float32_on_a_cpu_for_a_backbone_bfloat16_trains_slower(monkeypatch):
    from keras_transfer.models.backbones import BACKBONES

    monkeypatch.setattr(precision, "AUTO_BF16_ON_CPU", True)
    bf16_cpu = {"avx2", "avx512_bf16"}
    assert precision.choose("auto", gpu=False, flags=bf16_cpu, backbone="efficientnet_lite0") == "float32"
    assert precision.choose("auto", gpu=False, flags=bf16_cpu, backbone="vgg16") == "bfloat16"
    assert precision.choose("auto", gpu=True, flags=bf16_cpu, backbone="efficientnet_lite0") == "float16"
    assert precision.choose("bfloat16", gpu=False, flags=bf16_cpu, backbone="efficientnet_lite0") == "bfloat16"
    assert not BACKBONES["efficientnet_lite0"].cpu_bfloat16 and BACKBONES["vgg16"].cpu_bfloat16


def test_the_log_says_why_auto_kept_float32(monkeypatch, caplog):
    import logging

    monkeypatch.setattr(precision, "AUTO_BF16_ON_CPU", True)
    with caplog.at_level(logging.INFO, logger="keras_transfer"):
        with precision.using("auto", gpu=False, flags={"avx512_bf16"}, backbone="efficientnet_lite0"):
            pass
    assert "precision: float32 (Keras policy float32; bfloat16 trains efficientnet_lite0 slower on this CPU)" \
        in caplog.text


def test_float16_on_a_cpu_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="Received: precision='float16'"):
        precision.choose("float16", gpu=False, flags={"avx512_bf16"})
    with pytest.raises(ValueError, match="Received: precision='half'"):
        precision.choose("half", gpu=False, flags=set())
    assert precision.choose("float32", gpu=True, flags=set()) == "float32"


def test_cpu_flags_are_read_from_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset) and (not flags or "fpu" in flags or "sse2" in flags)


def test_using_restores_the_previous_policy():
    before = keras.mixed_precision.global_policy().name
    with precision.using("bfloat16", gpu=False, flags={"avx512_bf16"}) as chosen:
        assert chosen == "bfloat16" and keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before


def test_bfloat16_cached_features_give_the_float32_answers():
    rng = np.random.default_rng(0)
    y = (np.arange(24) % 3).astype("int32")
    x = np.clip(rng.normal(60 + 60 * y[:, None, None, None], 30, (24, 32, 32, 3)), 0, 255).astype("uint8")
    splits = data.split(data.ImageSet(x, y, ["a", "b", "c"]), 0.25, 0.0, seed=0)
    recipe = recipes.recipe(head_epochs=1, fine_tune_epochs=0, batch_size=8, verbose=0)
    f32 = training.build_model("vgg16", 3, weights="hed", input_size=32, removed=3)
    training.fine_tune(f32, splits, recipe)
    with precision.using("bfloat16", gpu=False, flags={"avx512_bf16"}):
        bf16 = training.build_model("vgg16", 3, weights="hed", input_size=32, removed=3)
        bf16.set_weights(f32.get_weights())
        cache = training.FeatureCache()
        # maps below the top (the top's are cached pooled, their means in float32: C floats an image)
        prefix, suffix, cut = training.split_model(bf16, layer_index(bf16.get_layer("vgg16"), "block4_conv1"))
        assert cut == "block3_pool"
        features = cache.features(prefix, cut, splits.val.images)
        assert "bfloat16" in str(features.dtype)  # half the memory of float32 features
        cached = np.asarray(training.batched_call(suffix, features.astype("float32")))
        served = training.predict_classes(bf16, splits.val.images)
    assert served.dtype == np.float32  # outputs stay float32
    reference = training.predict_classes(f32, splits.val.images)
    np.testing.assert_allclose(cached, reference, atol=0.05)
    np.testing.assert_allclose(served, reference, atol=0.05)
    assert (served.argmax(1) == reference.argmax(1)).mean() >= 0.8


def test_the_default_recipe_trains_in_bfloat16(tmp_path):
    """The linear probe, the standardisation and the cached stages all run under mixed_bfloat16."""
    from keras_transfer import runs
    from keras_transfer.runs import config as cfg

    config = cfg.TrainConfig(cfg.DataConfig(dataset="digits", input_size=32, limit_per_class=8),
                             cfg.ModelConfig(backbone="vgg16", weights="hed", removed=3),
                             cfg.RecipeConfig(head_epochs=1, fine_tune_epochs=1, verbose=0),
                             cfg.DistributeConfig(precision="bfloat16"))
    metrics = runs.train(config, str(tmp_path / "run"), progress=False)
    assert metrics["accuracy"] > 0.3  # ten classes: chance is 0.1
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
