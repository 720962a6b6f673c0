"""``to_dataset``: batched tf.data pipelines."""


import numpy as np

from keras_transfer import data


def test_to_dataset_batches_as_float32(rng):
    x = rng.integers(0, 255, (10, 16, 16, 3)).astype(np.uint8)
    y = np.arange(10) % 2
    batches = list(data.to_dataset(x, y, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert batches[0][0].dtype.name == "float32"
    np.testing.assert_array_equal(batches[0][0].numpy(), x[:4])
