"""Augmented views: ``count`` fixed, numbered transforms of every image (view 0 is the image itself).

Because view ``v`` is the same transform every epoch, the frozen prefix's features of each view
are computed once and cached like the plain images' (``FeatureCache.features(..., view=...)``);
training draws one view per image per epoch (:func:`keras_transfer.data.image_sets.to_dataset`), whether it
reads cached features or runs the images through the whole network, with the same draws; and
test-time augmentation averages the class probabilities over the same views.

Two kinds, chosen by what leaves the label unchanged:

``top_down``  images seen from above (solar cells, micrographs, satellite tiles): the 8 flips and
              90-degree turns of the square, exact (no interpolation). The first 4 keep the
              image's axes (itself, mirrored left-right, upside down, both): ``count=4`` suits
              images whose rows and columns differ (a solar cell's busbars run across it).
``photo``     photographs: view 0 plus horizontal flips of seeded crops (80-100 % of the side,
              resized back) with a brightness change of up to 10 %.

:func:`jitter` is the other kind of augmentation: random, not numbered, so never cached. Each
training image is shifted, zoomed and its contrast changed by a small random amount drawn anew
every epoch (one resampling, not one per change: thin cracks stay sharp). Fine-tuning applies it
after the view is drawn, so a run with jitter fine-tunes on the images, not on cached features.
"""

from __future__ import annotations

import dataclasses

import numpy as np

VIEW_KINDS = ("top_down", "photo")
MAX_VIEWS = {"top_down": 8, "photo": 32}
TOP_DOWN_DATASETS = ("elpv", "elpv_4class")


def kind_for(dataset: str | None) -> str:
    """The view kind that suits a built-in dataset (``top_down`` for the solar cells), else ``photo``."""
    return "top_down" if dataset in TOP_DOWN_DATASETS else "photo"


@dataclasses.dataclass(frozen=True)
class Views:
    kind: str = "photo"
    count: int = 8
    seed: int = 0

    def __post_init__(self):
        if self.kind not in VIEW_KINDS:
            raise ValueError(f"views kind must be one of {', '.join(VIEW_KINDS)}. Received: kind={self.kind!r}")
        if not 1 <= int(self.count) <= MAX_VIEWS[self.kind]:
            raise ValueError(f"{self.kind} views number 1 to {MAX_VIEWS[self.kind]}. Received: count={self.count}")

    @property
    def key(self) -> str:
        """What identifies view ``v``'s features in a cache, with ``v`` appended."""
        return f"{self.kind}/{self.count}/{self.seed if self.kind == 'photo' else 0}"

    def apply(self, images, v):
        """Views ``v`` (int tensor ``(B,)``, or one int for all) of float images ``(B, H, W, 3)`` in [0, 255]."""
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)
        v = tf.cast(v, tf.int32)
        if v.shape.rank == 0:
            v = tf.fill(tf.shape(images)[:1], v)
        return _top_down(images, v) if self.kind == "top_down" else _photo(images, v, self._photo_table())

    def _photo_table(self) -> np.ndarray:
        """Per view: crop box (y1, x1, y2, x2) in [0, 1], flip (0/1), brightness factor."""
        rng = np.random.RandomState(self.seed)
        rows = [(0.0, 0.0, 1.0, 1.0, 0.0, 1.0)]
        for v in range(1, self.count):
            side = rng.uniform(0.8, 1.0)
            y, x = rng.uniform(0.0, 1.0 - side, size=2)
            rows.append((y, x, y + side, x + side, float(v % 2), rng.uniform(0.9, 1.1)))
        return np.asarray(rows, "float32")


MAX_JITTER = 0.25


def check_jitter(amount: float) -> None:
    """Refuse a jitter amount outside ``(0, MAX_JITTER]`` (free of TensorFlow: recipes and the
    pipeline refuse it before any image is read)."""
    if not 0 < amount <= MAX_JITTER:
        raise ValueError(f"jitter is a fraction of the image's side, above 0 and at most {MAX_JITTER} (0: off). "
                         f"Received: jitter={amount}")


def jitter(images, amount: float, seed):
    """``images`` (float ``(B, H, W, 3)`` in [0, 255]) each shifted by up to ``amount`` of its side
    along each axis, zoomed in or out by up to ``amount``, its edges reflected, and its contrast
    scaled about its mean by a factor in ``[1 - amount, 1 + amount]``. ``seed``: a stateless seed
    (int tensor ``(2,)``): the same seed, the same jitter.

    One affine resampling per image (Keras's ``affine_transform``), where chaining Keras's
    ``RandomTranslation`` and ``RandomZoom`` layers would resample twice.
    """
    import tensorflow as tf
    from keras import ops

    check_jitter(amount)
    images = tf.convert_to_tensor(images, tf.float32)
    n = tf.shape(images)[0]
    height, width = tf.cast(tf.shape(images)[1], tf.float32), tf.cast(tf.shape(images)[2], tf.float32)
    draws = tf.random.stateless_uniform([n, 4], seed, minval=-amount, maxval=amount)
    zoom, shift_y, shift_x, contrast = (draws[:, i] for i in range(4))
    inverse = 1.0 / (1.0 + zoom)  # output pixel (x, y) reads input (x / s + ..., y / s + ...): s > 1 zooms in
    cx, cy = (width - 1) / 2, (height - 1) / 2
    zeros = tf.zeros_like(zoom)
    transform = tf.stack([inverse, zeros, cx - cx * inverse + shift_x * width,
                          zeros, inverse, cy - cy * inverse + shift_y * height, zeros, zeros], axis=1)
    moved = ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")
    mean = tf.reduce_mean(moved, axis=[1, 2, 3], keepdims=True)
    factor = tf.reshape(1.0 + contrast, [-1, 1, 1, 1])
    return tf.clip_by_value((moved - mean) * factor + mean, 0.0, 255.0)


def _top_down(images, v):
    import tensorflow as tf

    if images.shape[1] != images.shape[2]:
        raise ValueError(f"top_down views turn the image by 90 degrees, so it must be square. "
                         f"Received: images of shape {tuple(images.shape)}")
    axes_kept = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]  # id, mirrored, flipped, 180
    transposed = tf.transpose(images, [0, 2, 1, 3])
    axes_swapped = [transposed, transposed[:, ::-1], transposed[:, :, ::-1], transposed[:, ::-1, ::-1]]  # 90, 270...
    return tf.gather(tf.stack(axes_kept + axes_swapped, axis=1), v, batch_dims=1)


def _photo(images, v, table):
    import tensorflow as tf

    params = tf.gather(tf.constant(table), v)
    size = tf.shape(images)[1:3]
    n = tf.shape(images)[0]
    out = tf.image.crop_and_resize(images, params[:, :4], tf.range(n), size, method="bilinear")
    out = tf.where(params[:, 4][:, None, None, None] > 0.5, out[:, :, ::-1], out)
    return tf.clip_by_value(out * params[:, 5][:, None, None, None], 0.0, 255.0)
