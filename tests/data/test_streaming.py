"""Images streamed from their files: the same pixels, splits and training as in memory; a file
that fails when read is skipped and reported, never the end of a run."""
import csv
import os

import numpy as np
import pytest
from helpers import streaming_recipe, two_colour_classes, vgg_at_32, write_every_kind, write_truncated_jpeg

from keras_transfer import data, training
from keras_transfer.data import in_memory, streaming
from keras_transfer.training import recipes


def test_streamed_files_give_the_pixels_memory_holds_for_every_kind_of_file(tmp_path, rng):
    folder = tmp_path / "kinds"
    kinds = write_every_kind(str(folder / "a"), rng)
    write_every_kind(str(folder / "b"), np.random.default_rng(1))
    kinds.pop("transparent.gif")  # (read by the loader too; the server refuses it, not the loader)
    memory = data.load_folder(str(folder), 48, progress=False)
    files = data.load_folder(str(folder), 48, progress=False, in_memory="no")
    assert files.streamed and not memory.streamed
    assert files.paths == memory.paths and (files.labels == memory.labels).all()
    streamed = np.concatenate([images for _, images in files.images.batches(5)])
    assert streamed.dtype == np.uint8
    np.testing.assert_array_equal(streamed, memory.images)  # every kind, to the grey level
    np.testing.assert_array_equal(files.images[3:9], memory.images[3:9])
    batches = list(data.to_dataset(files.images, files.labels, batch_size=7).as_numpy_iterator())
    np.testing.assert_array_equal(np.concatenate([x for x, _ in batches]), memory.images.astype("float32"))


def test_splits_of_files_are_the_splits_in_memory_and_repeat_by_seed(tmp_path, rng):
    root = two_colour_classes(tmp_path / "d", rng, n=10)
    memory = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, seed=4, progress=False,
                       in_memory="yes")
    files = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, seed=4, progress=False,
                      in_memory="no")
    again = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, seed=4, progress=False,
                      in_memory="no")
    for a, b, c in zip((memory.train, memory.val, memory.test), (files.train, files.val, files.test),
                       (again.train, again.val, again.test)):
        assert a.paths == b.paths == c.paths
        assert b.streamed
    assert "streamed from their files" in files.summary()


def test_auto_streams_only_what_would_not_fit(tmp_path, rng, monkeypatch, caplog):
    root = two_colour_classes(tmp_path / "d", rng, n=4)
    assert not data.load_folder(root, 32, progress=False, in_memory="auto").streamed
    monkeypatch.setattr(in_memory, "memory_budget", lambda: 8 * 32 * 32 * 3 - 1)  # one byte short of 8 images
    with caplog.at_level("INFO"):
        assert data.load_folder(root, 32, progress=False, in_memory="auto").streamed
    assert "streaming them from their files" in caplog.text
    assert not data.load_folder(root, 32, progress=False, in_memory="yes").streamed
    # what the run keeps per image counts too: pixels that fit, with their cached features, may not
    monkeypatch.setattr(in_memory, "memory_budget", lambda: 8 * (32 * 32 * 3 + 1000) - 1)
    assert not data.load_folder(root, 32, progress=False, in_memory="auto", cost=data.RunCost(999)).streamed
    assert data.load_folder(root, 32, progress=False, in_memory="auto", cost=data.RunCost(1000)).streamed
    # held in memory, every worker of a cluster would decode every image; streamed, its share
    monkeypatch.setattr(in_memory, "memory_budget", lambda: 2**40)
    assert data.load_folder(root, 32, progress=False, in_memory="auto", cost=data.RunCost(workers=2)).streamed
    # images read once (every stage on cached features) are streamed past READ_ONCE_IN_MEMORY_MAX of pixels
    monkeypatch.setattr(in_memory, "READ_ONCE_IN_MEMORY_MAX", 8 * 32 * 32 * 3 - 1)
    assert data.load_folder(root, 32, progress=False, in_memory="auto", cost=data.RunCost(read_once=True)).streamed
    assert not data.load_folder(root, 32, progress=False, in_memory="auto", cost=data.RunCost()).streamed


def test_the_cached_bytes_an_image_are_estimated_before_the_data_is_read():
    """VGG16 at 32 px cut at block4_pool (2 x 2 x 512): the head stage keeps its 512 pooled floats, a
    fine-tuning stage frozen through block3_pool its 4 x 4 x 256 maps; 8 views: 8 times both."""
    from keras_transfer import training

    def estimate(**recipe):
        return training.estimate_cache("vgg16", 32, recipes.recipe(**recipe), removed=3)

    assert estimate(frozen="block3_pool") == training.CacheEstimate(4 * (512 + 4 * 4 * 256), read_once=True)
    assert estimate(frozen="all") == training.CacheEstimate(4 * 512 * 2, read_once=True)
    views = estimate(frozen="block3_pool", augment="top_down", augment_views=8)
    assert views == training.CacheEstimate(8 * 4 * (512 + 4 * 4 * 256), read_once=False)  # each view decodes it
    assert estimate(cache_features=False) == training.CacheEstimate(0, read_once=False)
    assert estimate(frozen=0) == training.CacheEstimate(4 * 512, read_once=False)  # fine-tuning reads the images


def test_a_dataset_without_files_refuses_to_stream():
    with pytest.raises(ValueError, match="comes as arrays, not files.*in_memory='no'"):
        data.load(dataset="digits", image_size=8, in_memory="no", progress=False)
    with pytest.raises(ValueError, match="in_memory must be one of auto, yes, no. Received: in_memory='sometimes'"):
        data.streams("sometimes", 10, 32, "data_dir")


def test_file_images_are_never_decoded_as_one_array_by_accident(tmp_path, rng):
    files = data.load_folder(two_colour_classes(tmp_path / "d", rng, n=3), 16, progress=False, in_memory="no")
    with pytest.raises(TypeError, match="not decoded as one array"):
        np.asarray(files.images)
    assert files.images.shape == (6, 16, 16, 3) and files.images[0].shape == (16, 16, 3)


@pytest.mark.parametrize("augment, cache, mixup", [(False, True, 0.0), ("top_down", True, 0.0), (False, False, 0.0),
                                                   ("top_down", False, 0.0), ("top_down", True, 0.4), (False, False, 0.4)])
def test_streamed_training_equals_training_in_memory_on_the_same_files(tmp_path, rng, augment, cache, mixup):
    """Cached, the streamed files' features are on disk (the in-memory ones in RAM); uncached both
    train end to end. Under mixup both blend the same rows by the same weights."""
    root = two_colour_classes(tmp_path / "d", rng, n=10)
    kw = dict(image_size=32, validation_split=0.2, test_split=0.2, seed=0, progress=False)
    memory, files = data.load(root, in_memory="yes", **kw), data.load(root, in_memory="no", **kw)
    recipe = streaming_recipe(augment=augment, augment_views=4, cache_features=cache, mixup=mixup)
    predictions = []
    for splits in (memory, files):
        model = vgg_at_32()
        histories = training.fine_tune(model, splits, recipe)
        predictions.append(training.predict_classes(model, splits.test.images))
        assert len(histories["head"]["loss"]) == 2 and len(histories["fine_tune"]["loss"]) == 1
    np.testing.assert_allclose(predictions[1], predictions[0], atol=2e-4)


def test_a_file_that_fails_when_read_is_skipped_reported_and_the_run_goes_on(tmp_path, rng):
    from keras_transfer import runs
    from keras_transfer.runs import config as config_lib

    root = two_colour_classes(tmp_path / "d", rng, n=10)
    late = [write_truncated_jpeg(os.path.join(root, c, f"late_{c}{i}.jpg"), rng) for c in ("red", "blue")
            for i in range(3)]
    for path in late:
        streaming.check_file(path)  # each passes the cheap check: it is found only when read
    cfg = config_lib.TrainConfig(
        config_lib.DataConfig(data_dir=root, input_size=32, validation_split=0.2, test_split=0.3, in_memory="no"),
        config_lib.ModelConfig(backbone="vgg16", weights=None, removed=3),
        config_lib.RecipeConfig(head_epochs=1, fine_tune_epochs=1, frozen="block3_pool", batch_size=4, verbose=0),
        config_lib.DistributeConfig(strategy="default", precision="float32"))
    metrics = runs.train(cfg, str(tmp_path / "run"), progress=False)
    with open(tmp_path / "run" / "skipped.csv") as f:
        reported = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    assert set(late) <= set(reported), reported
    assert all("cannot decode" in reported[p] or "truncated" in reported[p].lower() for p in late)
    assert metrics["skipped_files"] == len(reported)
    test = data.load(root, image_size=32, validation_split=0.2, test_split=0.3, progress=False, in_memory="no").test
    assert metrics["images"] == len([p for p in test.paths if p not in late]) < len(test)  # scored on the rest
    assert os.path.exists(tmp_path / "run" / "export" / "1" / "saved_model.pb")
    assert os.path.exists(tmp_path / "run" / "misclassified.png")


def test_files_deleted_after_they_were_listed_end_the_run_with_a_message_naming_them(tmp_path, rng):
    root = two_colour_classes(tmp_path / "d", rng, n=6)
    files = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, progress=False, in_memory="no")
    for path in files.train.paths:
        os.remove(path)
    with pytest.raises(Exception, match="none of the 8 files .* can be read any more.*moved or deleted"):
        training.fine_tune(vgg_at_32(), files, streaming_recipe(cache_features=False, linear_probe=False, normalize=False))
    assert len(files.late_skips()) == 8
