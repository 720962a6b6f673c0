"""Frozen-prefix features on disk: the same features and training as in memory, shared by reruns,
resumed after a kill, least recently used evicted."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import streaming_recipe, two_colour_classes, vgg_at_32

from keras_transfer import data, training
from keras_transfer.training import _disk_cache
from keras_transfer.training._disk_cache import DiskCache

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(HERE)))  # the repository


def _rows(start, stop):
    """A chunk of a 10-row entry whose values say which rows they are."""
    rows = np.arange(start, stop, dtype="float32")
    return np.repeat(rows[:, None], 3, axis=1), rows % 4 != 3


KILLED_WRITER = """
import os, signal, sys
import numpy as np
sys.path[:0] = [{here!r}, {tests!r}]  # this module, and the helpers it imports
from test_disk_cache import _rows
from keras_transfer.training import _disk_cache
_disk_cache.CHUNK = 2
done = []
def chunk(start, stop):
    if len(done) == 3:  # killed while computing the 4th chunk of 5
        os.kill(os.getpid(), signal.SIGKILL)
    done.append(start)
    return _rows(start, stop)
_disk_cache.DiskCache({directory!r}).features("entry", 10, chunk)
"""


def test_an_entry_killed_half_way_resumes_from_its_last_chunk(tmp_path, monkeypatch):
    directory = str(tmp_path / "cache")
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER.format(here=HERE, tests=os.path.dirname(os.path.abspath(HERE)),
                                                                       directory=directory)],
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert run.returncode == -9
    cache = DiskCache(directory)
    assert cache.get("entry") is None  # a half-computed entry is never served
    monkeypatch.setattr(_disk_cache, "CHUNK", 2)
    computed = []
    entry = cache.features("entry", 10, lambda a, b: (computed.append(a), _rows(a, b))[1])
    assert computed == [6, 8]  # the 3 chunks the killed run finished are not computed again
    np.testing.assert_array_equal(entry.features[:, 0], np.arange(10))
    np.testing.assert_array_equal(entry.ok, np.arange(10) % 4 != 3)
    assert sorted(os.listdir(directory)) == ["entry.json", "entry.npy", "entry.ok.npy"]  # the chunks are gone
    again = DiskCache(directory)
    assert again.features("entry", 10, lambda a, b: 1 / 0) is not None and again.computed_chunks == 0


def test_least_recently_used_entries_go_first_past_the_cap(tmp_path):
    entry_bytes = 128 + 10 * 3 * 4  # the .npy header and 10 x 3 float32
    cache = DiskCache(str(tmp_path), max_bytes=2 * entry_bytes + 10)
    for key in ("a", "b"):
        cache.features(key, 10, _rows)
    os.utime(tmp_path / "a.npy", (1, 1))
    os.utime(tmp_path / "b.npy", (2, 2))
    cache.get("a")  # used now: b is the least recently used
    cache.features("c", 10, _rows)
    assert sorted(k for _, _, k in cache.entries()) == ["a", "c"]
    assert not os.path.exists(tmp_path / "b.ok.npy")


def test_streamed_features_are_cached_on_disk_and_reused_by_a_rerun(tmp_path, rng):

    root = two_colour_classes(tmp_path / "d", rng, n=10)
    kw = dict(image_size=32, validation_split=0.2, test_split=0.2, seed=0, progress=False)
    files = data.load(root, in_memory="no", **kw)
    disk = DiskCache(str(tmp_path / "cache"))
    first = training.FeatureCache(disk=disk)
    model = vgg_at_32()
    training.fine_tune(model, files, streaming_recipe(), cache=first)
    computed = disk.computed_chunks
    assert computed >= 2 and len(first) == 0  # train and validation features, on disk, none in RAM
    rerun = training.FeatureCache(disk=DiskCache(str(tmp_path / "cache")))
    again = vgg_at_32()
    training.fine_tune(again, files, streaming_recipe(), cache=rerun)
    assert rerun.disk.computed_chunks == 0 and rerun.hits >= 2
    np.testing.assert_allclose(training.predict_classes(again, files.test.images),
                               training.predict_classes(model, files.test.images), atol=1e-6)


def test_features_too_large_for_memory_go_to_disk_with_the_same_training(tmp_path, rng):

    root = two_colour_classes(tmp_path / "d", rng, n=10)
    memory = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, progress=False, in_memory="yes")
    results = []
    for cache in (training.FeatureCache(), training.FeatureCache(max_bytes=1000, disk=DiskCache(str(tmp_path / "c")))):
        model = vgg_at_32()
        training.fine_tune(model, memory, streaming_recipe(), cache=cache)
        results.append(training.predict_classes(model, memory.test.images))
    assert cache.disk.computed_chunks >= 2 and len(cache) == 0
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)


def _cut_short(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _zeros_in_second_half(path):
    """What a power cut after an unflushed rename leaves: the right size, zeros where data was."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(size - size // 2))


@pytest.mark.parametrize("damage", [_cut_short, _zeros_in_second_half])
def test_a_damaged_entry_is_named_removed_and_computed_again(tmp_path, caplog, damage):
    cache = DiskCache(str(tmp_path))
    cache.features("entry", 10, _rows)
    damage(str(tmp_path / "entry.npy"))
    again = DiskCache(str(tmp_path))  # a later run
    with caplog.at_level(logging.WARNING, logger="keras_transfer.training"):
        entry = again.features("entry", 10, _rows)
    assert again.computed_chunks == 1
    assert f"{tmp_path / 'entry.npy'} is damaged" in caplog.text
    np.testing.assert_array_equal(entry.rows(range(10))[:, 0], np.arange(10))


def test_a_damaged_chunk_of_an_unfinished_entry_is_computed_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(_disk_cache, "CHUNK", 4)
    cache = DiskCache(str(tmp_path))
    part = tmp_path / "entry.part"
    part.mkdir()
    for start in (0, 4):  # an earlier run, killed before its last chunk; its second chunk cut short
        np.savez(part / f"{start:09d}.npz", **dict(zip(("features", "ok"), _rows(start, start + 4))))
    _cut_short(str(part / f"{4:09d}.npz"))
    with caplog.at_level(logging.WARNING, logger="keras_transfer.training"):
        entry = cache.features("entry", 10, _rows)
    assert cache.computed_chunks == 2 and f"chunk {part / '000000004.npz'} cannot be read" in caplog.text
    np.testing.assert_array_equal(entry.rows(range(10))[:, 0], np.arange(10))


@pytest.mark.parametrize("damage", [_cut_short, _zeros_in_second_half])
def test_training_on_a_damaged_cache_gives_the_clean_cache_s_predictions(tmp_path, rng, caplog, damage):

    root = two_colour_classes(tmp_path / "d", rng, n=10)
    files = data.load(root, image_size=32, validation_split=0.2, test_split=0.2, seed=0, progress=False,
                      in_memory="no")
    directory = tmp_path / "cache"
    clean = vgg_at_32()
    training.fine_tune(clean, files, streaming_recipe(), cache=training.FeatureCache(disk=DiskCache(str(directory))))
    entries = sorted(directory.glob("*.npy"))
    entries = [p for p in entries if not p.name.endswith(".ok.npy")]
    assert entries
    for path in entries:
        damage(str(path))
    rerun = training.FeatureCache(disk=DiskCache(str(directory)))
    model = vgg_at_32()
    with caplog.at_level(logging.WARNING, logger="keras_transfer.training"):
        training.fine_tune(model, files, streaming_recipe(), cache=rerun)
    assert rerun.disk.computed_chunks == len(entries)  # every damaged entry computed again, nothing else
    assert all(f"{p} is damaged" in caplog.text for p in entries)
    np.testing.assert_allclose(training.predict_classes(model, files.test.images),
                               training.predict_classes(clean, files.test.images), atol=1e-6)
