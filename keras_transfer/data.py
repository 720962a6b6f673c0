"""Images in, ``(uint8 image, int label)`` out: folders, built-in datasets, TFDS, arrays.

A set that fits in memory (``in_memory="auto"``: its decoded pixels take under half the memory
available) is decoded once, resized and held as a ``uint8`` array: bad files are visible up front
(each one skipped *and reported*) and the frozen-prefix feature cache is possible. A larger one
stays files (:class:`keras_transfer.streaming.FileImages`), each checked cheaply up front and
decoded batch by batch while training, by the same decode and resize. Either way splits are drawn
from the list of images, exact and repeatable by seed. Everything becomes RGB in [0, 255];
models preprocess inside themselves.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import gzip
import itertools
import logging
import os
from typing import Sequence

import numpy as np

from keras_transfer import images as images_lib
from keras_transfer.streaming import (DiskFeatures, FileImages, SkippedFile, check_file,  # noqa: F401
                                     memory_budget, skip_reason)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IN_MEMORY = ("auto", "yes", "no")
BUILTIN_DATASETS = ("elpv", "elpv_4class", "fashion_mnist", "digits")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


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
        """Whether the images stay files, read batch by batch (see :mod:`keras_transfer.streaming`)."""
        return isinstance(self.images, FileImages)


def take(images, index):
    """``images`` at positions ``index``: an array's rows (a copy), or files still files
    (:meth:`FileImages.take`, decoded when read)."""
    return images.take(np.asarray(index, dtype=int)) if isinstance(images, FileImages) else images[index]


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


# ---------------------------------------------------------------- decoding one file

def read_image(path: str, image_size: tuple[int, int]) -> np.ndarray:
    """Decode one file to ``(h, w, 3)`` uint8 RGB at ``image_size`` through the one path that
    training, ``predict`` and serving share (:mod:`keras_transfer.images`); raises ValueError
    if the file is unusable."""
    return images_lib.read_image(path, image_size)


# ---------------------------------------------------------------- folders

def _class_files(root: str) -> tuple[list[str], dict[str, list[str]], list[SkippedFile]]:
    """Each class folder's image files. Links are followed once: a folder or file reached twice
    (a link to an ancestor, a cycle, a second link to the same place) is read the first time
    and reported in ``skipped`` the next; a class folder that is (or holds) the data folder or
    another class's folder would give images two labels and is refused."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no such folder: point data_dir at a folder with one sub-folder per class. "
                                f"Received: data_dir={root!r}")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    skipped = [SkippedFile(os.path.join(root, f), "file at the top level: not in a class folder")
               for f in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, f)) and not f.startswith(".")]
    real = {c: os.path.realpath(os.path.join(root, c)) for c in classes}
    _refuse_overlapping_classes(root, real)
    seen_dirs = {path: c for c, path in real.items()}
    seen_files: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for c in classes:
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, c), followlinks=True):
            dirnames.sort()
            for d in list(dirnames):
                target = os.path.realpath(os.path.join(dirpath, d))
                if target in seen_dirs:
                    dirnames.remove(d)
                    skipped.append(SkippedFile(os.path.join(dirpath, d), f"a link to {target}, which is read "
                                               "elsewhere (a cycle, or another link to it): not read twice"))
                else:
                    seen_dirs[target] = c
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                if f.startswith("."):
                    continue  # .DS_Store and friends are not data
                if not f.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append(SkippedFile(path, f"extension is not one of {', '.join(IMAGE_EXTENSIONS)}"))
                    continue
                target = os.path.realpath(path)
                if target in seen_files:
                    skipped.append(SkippedFile(path, f"the same file as {seen_files[target]} (a link): read once"))
                    continue
                seen_files[target] = path
                found.append(path)
        files[c] = found
    return classes, files, skipped


def _refuse_overlapping_classes(root: str, real: dict[str, str]) -> None:
    """A class folder linking to the data folder, an ancestor of it, or into another class."""
    top = os.path.realpath(root)
    for c, path in real.items():
        if top == path or top.startswith(path.rstrip(os.sep) + os.sep):
            raise ValueError(f"class folder {c!r} under {root!r} is a link to {path}, which holds the data folder "
                             f"itself: every image would have a second label. Remove the link. Received: "
                             f"{os.path.join(root, c)}")
    for c, path in sorted(real.items(), key=lambda item: not os.path.islink(os.path.join(root, item[0]))):
        for other, other_path in real.items():
            if other != c and (path == other_path or path.startswith(other_path.rstrip(os.sep) + os.sep)):
                raise ValueError(f"class folders {c!r} and {other!r} under {root!r} hold the same images ({c!r} is "
                                 f"{path}): each image would have two labels. Remove the link. Received: "
                                 f"{os.path.join(root, c)}")


def load_folder(root: str, image_size: tuple[int, int] | int, workers: int | None = None, progress: bool = True,
                in_memory: str = "yes", cost: RunCost | None = None) -> ImageSet:
    """Every image under ``root/<class>/`` (nested folders allowed), decoded and resized; with
    ``in_memory="no"`` (or ``"auto"`` and a set too large, see :func:`streams`) checked cheaply
    and left on disk as :class:`FileImages`.

    Files that cannot be used are skipped and listed in ``ImageSet.skipped`` with the reason.
    Refuses (ValueError) an empty dataset, a class with no usable image, or a single class.
    """
    image_size = _size(image_size)
    classes, files, skipped = _class_files(root)
    if len(classes) < 2:
        raise ValueError(
            f"data_dir {root!r} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
            "transfer learning needs at least 2 classes, one sub-folder each."
        )
    jobs = [(path, label) for label, c in enumerate(classes) for path in files[c]]
    stream = streams(in_memory, len(jobs), image_size, f"data_dir {root!r}", cost)
    work = check_file if stream else (lambda path: read_image(path, image_size))
    # decoded straight into one array (rows of skipped files are never written, so never resident)
    pixels = None if stream else np.empty((len(jobs), *image_size, 3), np.uint8)
    labels, paths = [], []
    for path, label, result, err in _each_file(jobs, work, "checking images" if stream else "reading images",
                                                workers, progress):
        if err is not None:
            skipped.append(SkippedFile(path, skip_reason(err)))
            continue
        if pixels is not None:
            pixels[len(labels)] = result
        labels.append(label)
        paths.append(path)
    counts = np.bincount(np.array(labels, dtype=int), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ValueError(
            f"class folder(s) with no usable image under {root!r}: {', '.join(empty)}. "
            "Add images or remove the folder" + (f" ({len(skipped)} file(s) were unreadable; see the report)." if skipped else ".")
        )
    pixels = FileImages(paths, image_size) if stream else pixels[:len(labels)]
    return ImageSet(pixels, np.array(labels, dtype=np.int32), classes, skipped, paths)


def _each_file(jobs, work, desc: str, workers: int | None, progress: bool):
    """``(path, label, work(path), None)`` or ``(path, label, None, error)`` for each job, in order."""
    from tqdm.auto import tqdm

    threads = workers or os.cpu_count() or 1
    waiting = iter(jobs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool, \
            tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress) as bar:
        # a few files in flight per thread: the decoded images are handed on, never all held at once
        pending = collections.deque((job, pool.submit(work, job[0])) for job in itertools.islice(waiting, 4 * threads))
        while pending:
            (path, label), future = pending.popleft()
            following = next(waiting, None)
            if following is not None:
                pending.append((following, pool.submit(work, following[0])))
            bar.update()
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - one bad file is reported, never the end of a run
                yield path, label, None, err
                continue
            yield path, label, result, None


@dataclasses.dataclass
class RunCost:
    """What a run does with its images, for ``in_memory="auto"`` to weigh (see :func:`streams`)."""

    kept_per_image: int = 0  # bytes of features the run keeps in memory for each image (its feature cache)
    read_once: bool = False  # every stage trains on cached features: each image is decoded once, then never again
    workers: int = 1  # the processes of a cluster: in memory, each decodes every image


# Past this many bytes of decoded pixels, a run that reads each image once streams them: held in
# memory they would buy nothing (measured, 16,000 images of 128 px, features cached pooled: peak RSS
# 2.1 GB and 167 s in memory, 1.4 GB and 106 s streamed; benchmarks/bench_scale.py).
READ_ONCE_IN_MEMORY_MAX = 512 * 2**20


def streams(in_memory: str, n_images: int, image_size, what: str, cost: RunCost | None = None) -> bool:
    """Whether ``n_images`` at ``image_size`` stay files: ``in_memory`` "no", or "auto" and

    - what the run would hold in memory (the decoded pixels and ``cost.kept_per_image`` bytes of
      features each) takes more than :func:`~keras_transfer.streaming.memory_budget`; or
    - ``cost.workers`` > 1: held in memory, every worker would decode every image, streamed each
      decodes its share; or
    - ``cost.read_once`` and the pixels take more than :data:`READ_ONCE_IN_MEMORY_MAX`.
    """
    if in_memory not in IN_MEMORY:
        raise ValueError(f"in_memory must be one of {', '.join(IN_MEMORY)}. Received: in_memory={in_memory!r}")
    if in_memory != "auto":
        return in_memory == "no"
    cost = cost or RunCost()
    h, w = _size(image_size)
    pixels, features, budget = n_images * h * w * 3, n_images * int(cost.kept_per_image), memory_budget()
    logger.info("%s: %d images at %dx%d take %.2f GiB decoded, their cached features %.2f GiB; half the memory "
                "available is %.1f GiB", what, n_images, h, w, pixels / 2**30, features / 2**30, budget / 2**30)
    if pixels + features > budget:
        why = "more than half the memory available"
    elif cost.workers > 1:
        why = f"each of the {cost.workers} workers then decodes only its share"
    elif cost.read_once and pixels > READ_ONCE_IN_MEMORY_MAX:
        why = ("every stage trains on cached features, so each image is decoded once: held in memory the pixels "
               "would buy nothing")
    else:
        return False
    logger.info("%s: %s: streaming them from their files (in_memory='yes' holds them anyway)", what, why)
    return True


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


def from_directory(path: str, image_size=224, validation_split: float = 0.15, test_split: float = 0.15,
                   seed: int = 0, progress: bool = True) -> Splits:
    """``path/<class>/**/*.{jpg,jpeg,png,bmp,gif}`` -> stratified, seeded splits."""
    return split(load_folder(path, image_size, progress=progress), validation_split, test_split, seed)


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


def write_skipped_report(skipped: Sequence[SkippedFile], path: str) -> None:
    """``path`` (CSV: path, reason), one row per skipped file; header only when none were."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows((s.path, s.reason) for s in skipped)


# ---------------------------------------------------------------- built-in datasets

def _resize_all(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, h, w[, c]) uint8 -> (N, H, W, 3) uint8 through the shared resize."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images_lib.resize_array(images, image_size)


def elpv(image_size=300, variant: str = "binary", limit: int | None = None, seed: int = 0,
         in_memory: str = "yes", cost: RunCost | None = None) -> ImageSet:
    """ELPV (Deitsch et al. 2019): 2,624 real 300x300 electroluminescence images of solar cells.

    ``binary``: defective (defect probability >= 0.5) vs functional; ``4class``: the four
    annotated probabilities 0, 1/3, 2/3, 1. ``limit`` keeps at most that many images per
    class, chosen from ``seed`` *before* decoding, so a small sample loads in a second.
    """
    import importlib.util

    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None:
        raise ValueError("the elpv dataset needs the 'elpv-dataset' package: pip install elpv-dataset")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    table = np.genfromtxt(os.path.join(folder, "labels.csv"), dtype=["|S19", "<f8", "|S4"],
                          names=["path", "probability", "type"])
    files = np.char.decode(table["path"])
    probs = table["probability"]
    if variant == "binary":
        labels, names = (probs >= 0.5).astype(np.int32), ["functional", "defective"]
    elif variant == "4class":
        labels = np.round(probs * 3).astype(np.int32)
        names = ["p0", "p1_3", "p2_3", "p1"]
    else:
        raise ValueError(f"elpv variant must be 'binary' or '4class', got {variant!r}.")
    keep = np.arange(len(files))
    if limit:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:limit] for c in range(len(names))]))
    size = _size(image_size)
    paths = [os.path.join(folder, f) for f in files[keep]]
    if streams(in_memory, len(paths), size, "elpv", cost):
        return ImageSet(FileImages(paths, size), labels[keep], names, paths=paths)
    images = np.empty((len(paths), *size, 3), np.uint8)
    for i, (path, _, pixels, err) in enumerate(_each_file([(p, 0) for p in paths], lambda p: read_image(p, size),
                                                          "reading elpv", None, False)):
        if err is not None:
            raise err
        images[i] = pixels
    return ImageSet(images, labels[keep], names, paths=paths)


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(image_size=28) -> ImageSet:
    """Fashion-MNIST (70,000 28x28 grey images, 10 classes), all offline.

    From Keras's cache (``$KERAS_HOME/datasets/fashion-mnist``) if present, else the Debian
    package's idx files under /usr/share/datasets/fashion-mnist.
    """
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for folder in (os.path.join(keras_home, "datasets", "fashion-mnist"), *FASHION_MNIST_DIRS):
        paths = [os.path.join(folder, n) for n in names]
        if all(os.path.exists(p) for p in paths):
            x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
            images = np.concatenate([x_train, x_test])
            labels = np.concatenate([y_train, y_test]).astype(np.int32)
            return ImageSet(_resize_all(images, _size(image_size)), labels, list(FASHION_MNIST_CLASSES))
    raise FileNotFoundError(
        "Fashion-MNIST not found offline. Install it with 'apt-get install dataset-fashion-mnist' "
        "(Debian) or run keras.datasets.fashion_mnist.load_data() once with internet access."
    )


def digits(image_size=32) -> ImageSet:
    """scikit-learn's digits: 1,797 8x8 grey images of handwritten digits, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16.0 * 255.0).astype(np.uint8)
    return ImageSet(_resize_all(images, _size(image_size)), d.target.astype(np.int32), [str(i) for i in range(10)])


def from_tfds(name: str, image_size=224, split: str = "train", data_dir: str | None = None) -> ImageSet:
    """Any image-classification TFDS dataset already downloaded (nothing is downloaded here)."""
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(name, split=split, as_supervised=True, with_info=True, download=False, data_dir=data_dir)
    except Exception as err:  # TFDS raises AssertionError/DatasetNotFoundError for missing data
        raise ValueError(
            f"TFDS dataset {name!r} is not available offline ({err}). Download it once with "
            f"tfds.load({name!r}) on a machine with internet access, then pass its data_dir."
        ) from None
    images, labels = [], []
    for image, label in tfds.as_numpy(ds):
        images.append(_resize_all(image[None], _size(image_size))[0])
        labels.append(int(label))
    label_feature = info.features[info.supervised_keys[1]]
    names = list(getattr(label_feature, "names", None) or [str(i) for i in range(max(labels) + 1)])
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int32), names)


def builtin(name: str, image_size=224, limit: int | None = None, seed: int = 0, in_memory: str = "yes",
            cost: RunCost | None = None) -> ImageSet:
    """A built-in dataset by name: elpv, elpv_4class, fashion_mnist, digits, or tfds:NAME.

    ``limit`` keeps at most that many images per class (chosen from ``seed``). Only ELPV has
    files to stream (``in_memory="no"``); the others come as arrays.
    """
    if name in ("elpv", "elpv_4class"):
        return elpv(image_size, "binary" if name == "elpv" else "4class", limit, seed, in_memory, cost)
    if in_memory == "no":
        raise ValueError(f"dataset {name!r} comes as arrays, not files: there is nothing to stream. Use "
                         f"in_memory='auto' or 'yes' (or a folder of its images as data_dir). Received: "
                         f"dataset={name!r}, in_memory='no'")
    if name == "fashion_mnist":
        data = fashion_mnist(image_size)
    elif name == "digits":
        data = digits(image_size)
    elif name.startswith("tfds:"):
        data = from_tfds(name[len("tfds:"):], image_size)
    else:
        raise ValueError(f"Unknown dataset {name!r}. Built-in: {', '.join(BUILTIN_DATASETS)}, or tfds:NAME.")
    return limit_per_class(data, limit, seed) if limit else data


def load(data_dir: str | None = None, dataset: str | None = None, image_size=224,
         validation_split: float = 0.15, test_split: float = 0.15, seed: int = 0,
         limit: int | None = None, progress: bool = True, in_memory: str = "auto",
         cost: RunCost | None = None) -> Splits:
    """What the CLI calls: ``data_dir`` (a folder) or ``dataset`` (a built-in name) -> splits,
    held in memory or streamed from their files (``in_memory``: see :func:`streams`)."""
    if (data_dir is None) == (dataset is None):
        raise ValueError(f"give exactly one of data_dir (a folder) or dataset (a built-in name). "
                         f"Received: data_dir={data_dir!r}, dataset={dataset!r}")
    if data_dir:
        data = load_folder(data_dir, image_size, progress=progress, in_memory=in_memory, cost=cost)
        data = limit_per_class(data, limit, seed) if limit else data
    else:
        data = builtin(dataset, image_size, limit, seed, in_memory, cost)
    return split(data, validation_split, test_split, seed, in_place=True)  # `data` is ours: held once


# ---------------------------------------------------------------- tf.data

def to_dataset(x, y, batch_size: int = 32, shuffle: bool = False, seed: int = 0,
               sample_weight: np.ndarray | None = None, views=None, share: tuple[int, int] = (1, 0)):
    """A batched ``tf.data.Dataset`` of ``(float32 x, y[, weight])``.

    ``x``: images (an array, or :class:`FileImages` decoded as they are read), or cached features.
    ``y`` may be an array or a dict of arrays (multi-output heads). ``views`` (a
    :class:`keras_transfer.views.Views`, training only): each image appears as one of its views,
    drawn anew every epoch; ``x`` is then either the images (the drawn view is computed here) or a
    list of ``views.count`` arrays, every view's cached features (the drawn one is picked). Both
    draw the same views, so the two train alike, and files are shuffled and drawn as arrays are.
    Files are sharded by file: this worker (``share = (workers, index)``) reads only its share,
    before decoding; in-memory data is sharded by DATA across workers, as it has no files.
    """
    import tensorflow as tf

    from keras_transfer import streaming

    files = isinstance(x, FileImages)
    cached_views = isinstance(x, (list, tuple))
    if cached_views and (views is None or len(x) != views.count):
        raise ValueError(f"a list of cached views needs views with as many. Received: {len(x)} arrays, views={views}")
    on_disk = [a for a in (x if cached_views else [x]) if isinstance(a, DiskFeatures)]
    if on_disk:  # rows read as batches are drawn; only the rows of images that were read
        rows = np.flatnonzero(np.logical_and.reduce([a.ok for a in on_disk]))
        y = {k: v[rows] for k, v in y.items()} if isinstance(y, dict) else np.asarray(y)[rows]
        sample_weight = sample_weight[rows] if sample_weight is not None else None
        first = rows.astype(np.int64)
    elif files:
        first = np.arange(len(x), dtype=np.int64)
    else:
        first = tuple(x) if cached_views else x
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
    ds = ds.batch(batch_size)

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

    ds = ds.map(cast, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.OFF
                                                         if files or (on_disk and share[0] > 1)
                                                         else tf.data.experimental.AutoShardPolicy.DATA)
    return ds.with_options(options)


def sample_guitars(out_dir: str, n_per_class: int = 40, seed: int = 0, size: int = 160) -> str:
    """Write a small synthetic 3-class guitar folder; see :mod:`keras_transfer.guitars`."""
    from keras_transfer.guitars import write_sample

    return write_sample(out_dir, n_per_class, seed, size)

