"""Splits, sampling and class weights of an ``ImageSet``."""


import numpy as np
import pytest

from keras_transfer import data


def _toy(n_per_class=(30, 10), size=4):
    labels = np.concatenate([np.full(n, i) for i, n in enumerate(n_per_class)]).astype("int32")
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, size, size, 3), np.uint8)
    return data.ImageSet(images, labels, [f"c{i}" for i in range(len(n_per_class))])


def test_split_is_stratified_disjoint_and_seeded():
    toy = _toy((40, 20, 10))
    s = data.split(toy, 0.2, 0.1, seed=3)
    ids = [set(x.images[:, 0, 0, 0].tolist()) for x in (s.train, s.val, s.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == len(toy)
    assert s.val.counts() == {"c0": 8, "c1": 4, "c2": 2}
    assert s.test.counts() == {"c0": 4, "c1": 2, "c2": 1}
    again = data.split(toy, 0.2, 0.1, seed=3)
    np.testing.assert_array_equal(again.val.images, s.val.images)
    other = data.split(toy, 0.2, 0.1, seed=4)
    assert not np.array_equal(other.val.images, s.val.images)


def test_imbalance_is_reported_and_class_weights_balance():
    s = data.split(_toy((30, 10)), 0.0, 0.0)
    assert "imbalanced (3.0:1" in s.summary()
    w = data.class_weights(s.train)
    assert w[1] == pytest.approx(3 * w[0])
    assert 30 * w[0] + 10 * w[1] == pytest.approx(40)


def test_limit_per_class():
    small = data.limit_per_class(_toy((30, 10)), 5, seed=1)
    assert small.counts() == {"c0": 5, "c1": 5}


def test_split_classes_random_and_explicit():
    toy = _toy((5, 5, 5, 5, 5, 5))
    a, b = data.split_classes(toy, seed=2)
    assert len(a.class_names) == 3 and not set(a.class_names) & set(b.class_names)
    assert set(a.labels) == {0, 1, 2}
    a, b = data.split_classes(toy, a=["c0", "c5"], b=[1, 2])
    assert a.class_names == ["c0", "c5"] and b.class_names == ["c1", "c2"]
    assert len(a) == 10 and a.images[a.labels == 1][0, 0, 0, 0] == 25  # c5's first image, relabelled 1
    with pytest.raises(ValueError, match="overlap"):
        data.split_classes(toy, a=[0, 1], b=[1, 2])
