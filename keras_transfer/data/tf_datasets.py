"""``tf.data`` pipelines: batched ``(float32 x, y)`` from images, files or cached features, and
user-supplied streams.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from keras_transfer.data import streaming
from keras_transfer.data.streaming import DiskFeatures, FileImages

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Streams:
    """Training data as ``tf.data`` streams of single ``(image, label)`` elements (uint8 or float
    images ``(H, W, 3)``, integer labels), for data that does not fit in memory. A stage batches
    them and trains end to end (no feature cache: that needs the images in memory). Their sizes
    must be known (``dataset.cardinality()``; ``tf.data.experimental.assert_cardinality`` sets it).
    """

    train: object  # tf.data.Dataset
    val: object | None
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---- what a training stage asks of its data, as :class:`~keras_transfer.data.image_sets.Splits` answers it

    end_to_end = "end to end on streamed data"

    def num_train(self) -> int:
        return stream_size(self.train, "train")

    @property
    def has_val(self) -> bool:
        return self.val is not None

    def stage_inputs(self, augment=False) -> tuple:
        """No arrays or files to start from (``(None, None)``): a stage reads the streams."""
        if augment:
            raise ValueError(f"augmented views need in-memory splits. Received: augment={augment!r} with streamed data")
        return None, None

    def class_weights(self):
        raise ValueError("class_weight needs in-memory splits (their label counts). Received: class_weight=True")

    def memo_arrays(self) -> None:
        """Streams are not remembered by their contents: a head trained on them is not reused."""
        return None

    def for_statistics(self, n: int, seed: int) -> "Streams":
        return self

    def train_dataset(self, x, targets, batch_size: int, seed: int = 0, views=None, share=(1, 0)):
        return batch_stream(self.train, batch_size, targets)

    def val_dataset(self, x, targets, batch_size: int, share=(1, 0)):
        return batch_stream(self.val, batch_size, targets) if self.val is not None else None


def stream_size(dataset, name: str) -> int:
    n = int(dataset.cardinality())
    if n < 0:
        raise ValueError(f"the size of {name} is unknown (cardinality {n}); set it with "
                         f"dataset.apply(tf.data.experimental.assert_cardinality(n)). Received: {name}={dataset}")
    return n


def batch_stream(dataset, batch_size: int, targets=None):
    """A stream batched, images as float32, labels through ``targets`` (e.g. a head's)."""
    import tensorflow as tf

    def cast(x, y):
        return tf.cast(x, tf.float32), (targets(y) if targets else y)

    return dataset.batch(batch_size).map(cast, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------- tf.data

def shards_by_file(x) -> bool:
    """Whether :func:`to_dataset` gives each worker its own share of ``x`` (files, features on
    disk, or a list of either, per view) rather than sharding batches by data."""
    first = x[0] if isinstance(x, (list, tuple)) and len(x) else x
    return isinstance(first, (FileImages, DiskFeatures))


def to_dataset(x, y, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
               sample_weight: np.ndarray | None = None, views=None, share: tuple[int, int] = (1, 0)):
    """A batched ``tf.data.Dataset`` of ``(float32 x, y[, weight])``.

    ``x``: images (an array, or :class:`FileImages` decoded as they are read), or cached features.
    ``y`` may be an array or a dict of arrays (multi-output heads). ``views`` (a
    :class:`keras_transfer.data.augmentation.Views`, training only): each image appears as one of its views,
    drawn anew every epoch; ``x`` is then either the images (the drawn view is computed here) or a
    list of ``views.count`` arrays, every view's cached features (the drawn one is picked). Both
    draw the same views, so the two train alike, and files are shuffled and drawn as arrays are.
    Files are sharded by file: this worker (``share = (workers, index)``) reads only its share,
    before decoding; in-memory data is sharded by DATA across workers, as it has no files.
    """
    import tensorflow as tf

    files = isinstance(x, FileImages)
    cached_views = isinstance(x, (list, tuple))
    if cached_views and (views is None or len(x) != views.count):
        raise ValueError(f"a list of cached views needs views with as many. Received: {len(x)} arrays, views={views}")
    on_disk = [a for a in (x if cached_views else [x]) if isinstance(a, DiskFeatures)]
    first, y, sample_weight = _first_column(x, y, sample_weight, on_disk, files, cached_views)
    parts = (first, y) + (() if sample_weight is None else (sample_weight,))
    ds = in_order = tf.data.Dataset.from_tensor_slices(parts)
    if shuffle:
        ds = ds.shuffle(len(y if not isinstance(y, dict) else next(iter(y.values()))), seed=seed,
                        reshuffle_each_iteration=True)
    if files:
        ds = streaming.read(ds, x, share, in_order)
    elif on_disk and share[0] > 1:  # as files: this worker's share, after the shuffle (every worker has every row)
        workers, index = share
        ds = ds.take(len(first) // workers * workers).shard(workers, index)
    if views is not None:
        draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(tf.math.floormod(r, views.count), tf.int32))
        ds = tf.data.Dataset.zip(ds, draws).map(lambda element, v: (*element, v))
    ds = ds.batch(batch_size).map(_caster(views, on_disk, cached_views), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.OFF
                                                         if files or (on_disk and share[0] > 1)
                                                         else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def mixup(dataset, alpha: float, seed: int = 0):
    """``dataset``'s batches ``(x, y)`` blended pairwise (mixup, Zhang et al. 2018): row ``i``
    becomes ``l * row_i + (1 - l) * row_j`` in ``x`` and in its one-hot ``y`` alike, ``j`` another
    row of the batch and ``l ~ Beta(alpha, alpha)``, drawn per row and anew every epoch.

    ``x`` may be images or cached features of any rank (pooled vectors too): Keras's ``MixUp``
    layer blends image-shaped batches only.
    """
    import tensorflow as tf

    if not alpha > 0:
        raise ValueError(f"mixup's alpha must be above 0. Received: alpha={alpha}")
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)

    def blend(element, pair):
        x, y = element
        if isinstance(y, dict):
            raise ValueError("mixup blends one-hot labels of one output. Received: labels with outputs "
                             f"{sorted(y)}")
        n = tf.shape(y)[0]
        beta, gamma, shuffle = tf.unstack(tf.random.experimental.stateless_split(pair, 3))
        # Beta(a, a) as G1 / (G1 + G2) of two Gamma(a) draws; both can underflow to 0 at small a
        g1 = tf.random.stateless_gamma([n], beta, alpha)
        g2 = tf.random.stateless_gamma([n], gamma, alpha)
        weight = tf.math.divide_no_nan(g1, g1 + g2)
        partner = tf.random.experimental.stateless_shuffle(tf.range(n), shuffle)

        def mixed(t):
            w = tf.reshape(tf.cast(weight, t.dtype), [-1] + [1] * (t.shape.rank - 1))
            return w * t + (1 - w) * tf.gather(t, partner)

        return mixed(x), mixed(tf.cast(y, tf.float32))

    return tf.data.Dataset.zip(dataset, seeds).map(blend, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def jittered(dataset, amount: float, seed: int = 0):
    """``dataset``'s batches ``(x, y[, weight])`` with each image of ``x`` jittered
    (:func:`keras_transfer.data.augmentation.jitter`: shifted, zoomed and its contrast changed by up
    to ``amount``), drawn anew every epoch and repeatably by ``seed``; labels and weights unchanged.
    ``x`` must be images, not cached features."""
    import tensorflow as tf

    from keras_transfer.data.augmentation import check_jitter, jitter

    check_jitter(amount)  # here, not when the pipeline first runs
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)

    def move(element, pair):
        x, *rest = element
        if x.shape.rank != 4:
            raise ValueError(f"jitter moves images (batch, height, width, channels), not features. "
                             f"Received: a batch of shape {x.shape}")
        return (jitter(x, amount, pair), *rest)

    return tf.data.Dataset.zip(dataset, seeds).map(move, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def _first_column(x, y, sample_weight, on_disk: list, files: bool, cached_views: bool):
    """``(first, y, sample_weight)``: what the pipeline's first column slices (the arrays, or row
    numbers of files and of features on disk), the rest kept to the rows that were read."""
    if on_disk:  # rows read as batches are drawn; only the rows of images that were read
        rows = np.flatnonzero(np.logical_and.reduce([a.ok for a in on_disk]))
        y = {k: v[rows] for k, v in y.items()} if isinstance(y, dict) else np.asarray(y)[rows]
        sample_weight = sample_weight[rows] if sample_weight is not None else None
        return rows.astype(np.int64), y, sample_weight
    if files:
        return np.arange(len(x), dtype=np.int64), y, sample_weight
    return (tuple(x) if cached_views else x), y, sample_weight


def _caster(views, on_disk: list, cached_views: bool):
    """The batch map: float32 images or features, of the drawn view if there are views."""
    import tensorflow as tf

    def cast(*batch):
        if on_disk:  # features, of the drawn view if there are views (one array per view)
            v, rest = (batch[-1], batch[1:-1]) if views is not None else (None, batch[1:])
            return (streaming.gather(on_disk, batch[0], v), *rest)
        if views is None:
            return (tf.cast(batch[0], tf.float32), *batch[1:])
        *batch, v = batch
        if cached_views:
            return (tf.cast(tf.gather(tf.stack(batch[0], axis=1), v, batch_dims=1), tf.float32), *batch[1:])
        return (views.apply(tf.cast(batch[0], tf.float32), v), *batch[1:])

    return cast
