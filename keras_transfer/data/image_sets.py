"""Images in, ``(uint8 image, int label)`` out: folders, built-in datasets, TFDS, arrays.

A set that fits in memory (``in_memory="auto"``: its decoded pixels take under half the memory
available) is decoded once, resized and held as a ``uint8`` array: bad files are visible up front
(each one skipped *and reported*) and the frozen-prefix feature cache is possible. A larger one
stays files (:class:`keras_transfer.data.streaming.FileImages`), each checked cheaply up front and
decoded batch by batch while training, by the same decode and resize. Either way splits are drawn
from the list of images, exact and repeatable by seed. Everything becomes RGB in [0, 255];
models preprocess inside themselves.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

import numpy as np

from keras_transfer.data.streaming import FileImages, SkippedFile
from keras_transfer.data.tf_datasets import to_dataset

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class ImageSet:
    """Images ``(N, H, W, 3)`` uint8 (an array, or :class:`FileImages` still on disk), labels
    ``(N,)`` int32, and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    skipped: list[SkippedFile] = dataclasses.field(default_factory=list)
    paths: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def counts(self) -> dict[str, int]:
        n = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(k) for c, k in zip(self.class_names, n)}

    def subset(self, index) -> "ImageSet":
        index = np.asarray(index, dtype=int)
        paths = [self.paths[i] for i in index] if self.paths is not None else None
        return ImageSet(take(self.images, index), self.labels[index], list(self.class_names), [], paths)

    @property
    def streamed(self) -> bool:
        """Whether the images stay files, read batch by batch (see :mod:`keras_transfer.data.streaming`)."""
        return isinstance(self.images, FileImages)

    def fit_arguments(self, y, batch_size: int, shuffle: bool = False, seed: int = 0) -> dict:
        """What ``keras.Model.fit`` takes for these images and targets ``y``: the arrays (Keras batches
        and shuffles them), or for files a pipeline that reads them batch by batch (shuffled by tf.data)."""
        if self.streamed:
            return {"x": to_dataset(self.images, y, batch_size, shuffle=shuffle, seed=seed), "shuffle": False}
        return {"x": self.images, "y": y, "batch_size": batch_size, "shuffle": shuffle}

    def validation_data(self, y, batch_size: int):
        """``fit``'s ``validation_data`` for these images and targets ``y``."""
        return to_dataset(self.images, y, batch_size) if self.streamed else (self.images, y)

    def fingerprint_of(self, i: int) -> bytes:
        """What identifies image ``i``: its pixels, or for a file still a file its size and time."""
        held = self.images.fingerprint_of(i) if self.streamed else self.images[i].tobytes()
        return held if isinstance(held, bytes) else held.encode()


def take(images, index):
    """``images`` at positions ``index``: an array's rows (a copy), or files still files
    (:meth:`FileImages.take`, decoded when read)."""
    return images.take(np.asarray(index, dtype=int)) if isinstance(images, FileImages) else images[index]


def batches(images, batch_size: int):
    """``(positions, uint8 images)`` chunks of ``images``, whatever holds them: an array in one
    chunk (the caller batches it), files batch by batch, those that cannot be read left out."""
    if isinstance(images, FileImages):
        yield from images.batches(batch_size)
    else:
        yield np.arange(len(images)), images


@dataclasses.dataclass
class Splits:
    """Stratified train/validation/test splits of one dataset."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str]
    skipped: list[SkippedFile] = dataclasses.field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.train.image_size

    @property
    def streamed(self) -> bool:
        return self.train.streamed

    def late_skips(self) -> list[SkippedFile]:
        """Streamed files that passed the up-front check but failed when read (so far)."""
        return self.train.images.skips.files if self.streamed else []

    def summary(self) -> str:
        lines = [f"{len(self.class_names)} classes, {len(self.train)} train / {len(self.val)} val / "
                 f"{len(self.test)} test images at {self.image_size[0]}x{self.image_size[1]}"
                 + (", streamed from their files" if self.streamed else "")]
        counts = self.train.counts()
        lines += [f"  {name:<20} {counts[name]:>6} train" for name in self.class_names]
        if imbalance(self.train) > 1.5:
            lines.append(f"  classes are imbalanced ({imbalance(self.train):.1f}:1 largest to smallest); "
                         "consider class weights (class_weight=True)")
        lines += [f"  {gap}" for gap in self.gaps()]
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable file(s): see skipped.csv")
        return "\n".join(lines)

    # ---- what a training stage asks of its data, whatever holds it (Streams answers the same)

    @property
    def end_to_end(self) -> str:
        """How a stage that does not cache features trains on these splits, for the log."""
        return "end to end" + (", streaming the files" if self.streamed else "")

    def num_train(self) -> int:
        return len(self.train)

    @property
    def has_val(self) -> bool:
        return len(self.val) > 0

    def stage_inputs(self, augment=False) -> tuple:
        """``(train, val)`` images a stage starts from (arrays, or files read as batches are drawn),
        augmented or not (``augment``, the recipe's)."""
        return self.train.images, self.val.images

    def class_weights(self) -> dict[int, float]:
        return class_weights(self.train)

    def memo_arrays(self) -> list | None:
        """What a head trained on these splits may be remembered by (their pixels and labels);
        None for files, which are not read whole for it."""
        if self.streamed:
            return None
        return [self.train.images, self.train.labels, self.val.images, self.val.labels]

    def for_statistics(self, n: int, seed: int) -> "Splits":
        """Splits to estimate feature statistics from: these, or for files a stratified sample
        of at most ``n`` images of each part, the same on every worker (a pass over every file on
        each would undo their sharding)."""
        if not self.streamed:
            return self
        return dataclasses.replace(self, train=stratified_sample(self.train, n, seed),
                                   val=stratified_sample(self.val, n, seed))

    def train_dataset(self, x, targets, batch_size: int, seed: int, views=None, share=(1, 0)):
        """The shuffled training ``tf.data`` pipeline of ``x`` (the training images, or their cached
        features), labels through ``targets``; ``share``: this worker's, for files."""
        return to_dataset(x, targets(self.train.labels), batch_size, shuffle=True, seed=seed, views=views, share=share)

    def val_dataset(self, x, targets, batch_size: int, share=(1, 0)):
        """The validation pipeline of ``x``; None without validation images."""
        return to_dataset(x, targets(self.val.labels), batch_size, share=share) if len(self.val) else None

    def gaps(self) -> list[str]:
        """A sentence for each class that has no validation or no test image while others do
        (a class of fewer than 3 images is all train): said before training, not found after."""
        said = []
        whole = {c: self.train.counts()[c] + self.val.counts()[c] + self.test.counts()[c] for c in self.class_names}
        for part, name in ((self.val, "validation"), (self.test, "test")):
            if not len(part) and max(whole.values()) < 3:
                said.append(f"no {name} images: every class has fewer than 3 images, all used for training")
            if not len(part):
                continue
            counts = part.counts()
            missing = [c for c in self.class_names if counts[c] == 0]
            if missing:
                said.append(f"no {name} image of {', '.join(missing)} (a class needs 3 images or more to be split): "
                            f"{name} scores leave {'it' if len(missing) == 1 else 'them'} out")
        return said


# ---------------------------------------------------------------- decoding one file

def _size(image_size) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    return tuple(int(s) for s in image_size)


# ---------------------------------------------------------------- splits

def split(data: ImageSet, validation_split: float = 0.15, test_split: float = 0.15, seed: int = 0,
          in_place: bool = False) -> Splits:
    """Stratified, seeded train/val/test split: each class is divided in the same proportions.

    ``in_place``: ``data``'s array is reordered (train, val, test) and the splits are slices of
    it, instead of copies: the pixels are held once, not twice (``data`` is then reordered too).
    """
    for name, frac in (("validation_split", validation_split), ("test_split", test_split)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1), got {frac}.")
    if validation_split + test_split >= 1:
        raise ValueError("validation_split + test_split must leave images to train on (< 1).")
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for label in range(len(data.class_names)):
        idx = rng.permutation(np.flatnonzero(data.labels == label))
        n = len(idx)
        n_test = int(round(n * test_split)) if n >= 3 else 0
        n_val = int(round(n * validation_split)) if n >= 3 else 0
        n_test = max(n_test, 1) if test_split and n >= 3 else n_test
        n_val = max(n_val, 1) if validation_split and n >= 3 else n_val
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test:n_test + n_val])
        parts["train"].extend(idx[n_test + n_val:])
    index = [np.sort(np.asarray(parts[k], dtype=int)) for k in ("train", "val", "test")]
    if in_place and not data.streamed:
        order = np.concatenate(index)  # every row once
        _permute_rows(data.images, order)
        data.labels[:] = data.labels[order]
        if data.paths is not None:
            data.paths[:] = [data.paths[i] for i in order]
        ends = np.cumsum([0] + [len(i) for i in index])
        index = [np.arange(a, b) for a, b in zip(ends[:-1], ends[1:])]
        sliced = [ImageSet(data.images[a:b], data.labels[a:b].copy(), list(data.class_names), [],
                           data.paths[a:b] if data.paths is not None else None) for a, b in zip(ends[:-1], ends[1:])]
        return Splits(*sliced, class_names=list(data.class_names), skipped=list(data.skipped))
    return Splits(*(data.subset(i) for i in index), class_names=list(data.class_names), skipped=list(data.skipped))


def _permute_rows(array: np.ndarray, order: np.ndarray) -> None:
    """``array[:] = array[order]`` (``order`` a permutation of its rows), one row at a time along
    its cycles: no second copy of the array."""
    done = np.zeros(len(order), bool)
    for start in range(len(order)):
        if done[start]:
            continue
        first, i = array[start].copy(), start
        while True:
            done[i] = True
            j = int(order[i])
            if j == start:
                array[i] = first
                break
            array[i] = array[j]
            i = j


def imbalance(data: ImageSet) -> float:
    """Largest class count over smallest."""
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    return float(counts.max() / max(counts.min(), 1))


def class_weights(data: ImageSet) -> dict[int, float]:
    """Keras ``class_weight`` that balances the classes: ``N / (K * count)``."""
    counts = np.bincount(data.labels, minlength=len(data.class_names)).astype(float)
    return {i: float(len(data) / (len(counts) * max(c, 1))) for i, c in enumerate(counts)}


def limit_per_class(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """At most ``n`` images of each class, chosen at random (the reduced-data experiments)."""
    if n < 1:
        raise ValueError(f"limit_per_class needs n >= 1, got {n}.")
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(data.labels == c))[:n] for c in range(len(data.class_names))]
    out = data.subset(np.sort(np.concatenate(keep)))
    out.skipped = list(data.skipped)
    return out


def join(a: ImageSet, b: ImageSet) -> ImageSet:
    """The images of ``a`` then ``b`` (both in memory, or both files), with their labels."""
    if a.streamed:
        images = FileImages(a.images.paths + b.images.paths, a.images.size, a.images.skips)
    else:
        images = np.concatenate([a.images, b.images])
    paths = a.paths + b.paths if a.paths is not None and b.paths is not None else None
    return ImageSet(images, np.concatenate([a.labels, b.labels]), list(a.class_names), [], paths)


def stratified_sample(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """About ``n`` images drawn from ``seed``, each class in its proportion (at least 2 of each);
    ``data`` itself when it holds no more."""
    if len(data) <= n:
        return data
    return data.subset(stratified_index(data.labels, n, seed))


def stratified_index(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted positions of about ``n`` of ``labels``, each class in its proportion (at least 2 of each)."""
    labels = np.asarray(labels)
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max(2, int(round(n * np.mean(labels == c))))]
            for c in classes]
    return np.sort(np.concatenate(keep))


def split_classes(data: ImageSet, a: Sequence | None = None, b: Sequence | None = None,
                  seed: int | None = 0) -> tuple[ImageSet, ImageSet]:
    """Split the *classes* into two datasets A and B (Yosinski et al. 2014; Borthakur & Einhorn).

    Give ``a`` (and optionally ``b``) as class names or ids, or neither for a random half/half
    split from ``seed``. Labels are renumbered 0..k-1 inside each part.
    """
    names = list(data.class_names)

    def ids(group):
        return [names.index(g) if isinstance(g, str) else int(g) for g in group]

    if a is None:
        order = np.random.default_rng(seed).permutation(len(names))
        a_ids, b_ids = sorted(order[: len(names) // 2].tolist()), sorted(order[len(names) // 2:].tolist())
    else:
        a_ids = ids(a)
        b_ids = ids(b) if b is not None else [i for i in range(len(names)) if i not in a_ids]
    if set(a_ids) & set(b_ids):
        raise ValueError(f"class splits overlap: {sorted(set(a_ids) & set(b_ids))}")
    if len(a_ids) < 2 or len(b_ids) < 2:
        raise ValueError("each class split needs at least 2 classes.")

    def part(group):
        idx = np.flatnonzero(np.isin(data.labels, group))
        remap = {old: new for new, old in enumerate(group)}
        out = data.subset(idx)
        out.labels = np.array([remap[int(y)] for y in out.labels], dtype=np.int32)
        out.class_names = [names[g] for g in group]
        return out

    return part(a_ids), part(b_ids)
