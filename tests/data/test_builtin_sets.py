"""The built-in datasets, offline: ELPV, Fashion-MNIST, digits, TFDS, the synthetic guitars."""

import os

import pytest

from keras_transfer import data
from keras_transfer.data import builtin_sets


def test_elpv_real_images_few():
    ds = data.elpv(48, "binary", limit=6, seed=0)
    assert ds.images.shape == (12, 48, 48, 3) and ds.class_names == ["functional", "defective"]
    assert ds.images.std() > 10  # real pictures, not blanks
    four = data.elpv(32, "4class", limit=3)
    assert four.counts() == {"p0": 3, "p1_3": 3, "p2_3": 3, "p1": 3}


def test_fashion_mnist_offline():
    if not any(os.path.isdir(d) for d in data.FASHION_MNIST_DIRS):
        pytest.skip("dataset-fashion-mnist not installed (.ci/run installs it)")
    ds = data.fashion_mnist(28)
    assert len(ds) == 70000 and ds.counts()["bag"] == 7000
    assert ds.images.shape[1:] == (28, 28, 3)


def test_fashion_mnist_missing_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(builtin_sets, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist()


def test_digits_and_builtin_dispatch():
    ds = data.builtin("digits", 16, limit=4)
    assert ds.images.shape == (40, 16, 16, 3) and ds.images.max() > 200
    with pytest.raises(ValueError, match="Unknown dataset 'cifar'.*elpv"):
        data.builtin("cifar")


def test_from_tfds_reads_a_prepared_dataset_without_download():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds = data.from_tfds("mnist", image_size=20)
    assert ds.images.shape == (12, 20, 20, 3) and ds.class_names[:2] == ["0", "1"]


def test_from_tfds_not_downloaded_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not available offline"):
        data.from_tfds("mnist", data_dir=str(tmp_path))


def test_sample_guitars_writes_three_loadable_classes(tmp_path):
    out = data.sample_guitars(str(tmp_path / "g"), n_per_class=3, seed=1, size=64)
    ds = data.load_folder(out, 64, progress=False)
    assert ds.class_names == ["les_paul", "sg", "stratocaster"] and ds.counts() == {c: 3 for c in ds.class_names}
    assert not ds.skipped
    with pytest.raises(FileExistsError, match="exists"):
        data.sample_guitars(out, n_per_class=1, seed=1)
