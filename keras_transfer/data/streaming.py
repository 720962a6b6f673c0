"""Images left on disk: a list of files decoded batch by batch, for sets too large to hold decoded.

:class:`FileImages` stands where an in-memory ``(N, H, W, 3)`` uint8 array would (``len``,
``shape``, indexing decodes), so splits, the probe and the plots take either. Training and
evaluation read it through :func:`read` and :meth:`FileImages.batches`: a tf.data pipeline that
decodes and resizes in parallel through the one path training in memory and serving use
(:func:`~keras_transfer.data.images.decode_file`, then :func:`~keras_transfer.data.images.resize`), reads under several workers only this worker's share
of the files, and skips a file that fails this late (it passed :func:`check_file` when listed),
recording it in the set's :class:`SkipLog` for ``skipped.csv``. Elsewhere (a probe's sample, the
search's floor) a file that fails late is recorded too and a grey image stands in for it: one
image among many in a score, never the end of a run.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import logging
import os
import threading

import numpy as np

from keras_transfer.data import images as images_lib

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


def skip_reason(err: BaseException) -> str:
    """A one-line reason for a skipped file: ValueErrors are ours, anything else is named."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, ValueError) and text:
        return text[:300]
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


class SkipLog:
    """Files that failed after they were listed, each once (thread-safe: tf.data decodes in parallel)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._files: dict[str, SkippedFile] = {}

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            if path in self._files:
                return
            self._files[path] = SkippedFile(path, reason)
        logger.warning("skipped %s (it could not be read this time): %s", path, reason)

    @property
    def files(self) -> list[SkippedFile]:
        with self._lock:
            return list(self._files.values())

    def __len__(self) -> int:
        return len(self._files)


def check_file(path: str) -> None:
    """The cheap check a file passes before it is listed for streaming: not empty, a header Pillow
    reads, a size :data:`~keras_transfer.data.images.MAX_PIXELS` allows. Nothing is decoded, so a file
    cut short in its pixels is found when it is read (and skipped then). Raises ValueError."""
    from PIL import Image, UnidentifiedImageError

    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            images_lib.check_pixels(*image.size)
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode: {err}") from None


def memory_budget() -> int:
    """Bytes a decoded set may take in memory: half of what this machine has available now."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if ":" in line}
        available = info.get("MemAvailable", info.get("MemTotal"))
    except (OSError, ValueError, IndexError):
        available = None
    if not available:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(available // 2)


class DiskFeatures:
    """Float32 features ``(N, ...)`` in a ``.npy`` file (see :mod:`keras_transfer.training._disk_cache`),
    and ``ok`` ``(N,)``: which images could be read. Training reads the rows it draws, batch by
    batch, with ``pread`` rather than a memory map: the rows pass through the page cache and the
    process's resident memory stays flat however large the file."""

    def __init__(self, path: str, ok: np.ndarray):
        self.path, self.ok = path, np.asarray(ok, bool)
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran or dtype != np.dtype("float32"):
            raise ValueError(f"{path} is not a C-ordered float32 array. Received: dtype={dtype}, fortran={fortran}")
        self.shape = tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index) -> np.ndarray:
        """Rows ``index`` (ints), read from the file, float32 ``(len(index), ...)``."""
        out = np.empty((len(index), *self.shape[1:]), "float32")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for k, i in enumerate(index):
                out[k] = np.frombuffer(os.pread(fd, self.row_bytes, self.offset + int(i) * self.row_bytes),
                                       "float32").reshape(self.shape[1:])
        finally:
            os.close(fd)
        return out

    @property
    def features(self) -> np.ndarray:
        """All rows (a read-only memory map)."""
        return np.load(self.path, mmap_mode="r")


class FileImages:
    """``(N, H, W, 3)`` uint8 images that stay files until read: ``paths`` at ``size``.

    Indexing decodes (``x[i]``, ``x[a:b]``, ``x[[i, j]]``) and gives numpy arrays; :meth:`take`
    gives another FileImages. Subsets share the :class:`SkipLog`.
    """

    def __init__(self, paths, size, skips: SkipLog | None = None):
        self.paths = list(paths)
        self.size = tuple(int(s) for s in size)
        self.skips = skips if skips is not None else SkipLog()

    dtype = np.dtype("uint8")
    ndim = 4

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), *self.size, 3)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __repr__(self) -> str:
        return f"FileImages({len(self)} files at {self.size[0]}x{self.size[1]})"

    def take(self, index) -> "FileImages":
        return FileImages([self.paths[i] for i in np.asarray(index, dtype=int)], self.size, self.skips)

    def read(self, i: int) -> tuple[np.ndarray, bool]:
        """File ``i`` as training sees it, and whether it could be read (if not: grey, recorded)."""
        image, ok = self.decode(i)
        return (images_lib.resize_array(image, self.size) if ok else np.full((*self.size, 3), 128, np.uint8)), ok

    def decode(self, i: int) -> tuple[np.ndarray, bool]:
        """File ``i`` decoded (:func:`~keras_transfer.data.images.decode_file`) at its own size, and whether
        it could be (if not: one grey pixel, and the file is recorded in :attr:`skips`)."""
        try:
            return images_lib.decode_file(self.paths[i]), True
        except Exception as err:  # noqa: BLE001 - one bad file is reported, never the end of a run
            self.skips.add(self.paths[i], skip_reason(err))
            if len(self.skips) >= len(self) and set(self.paths) <= {s.path for s in self.skips.files}:
                # nothing left to read: say so rather than wait
                raise ValueError(f"none of the {len(self)} files (e.g. {self.paths[0]}) can be read any more "
                                 f"(the last: {skip_reason(err)}); were they moved or deleted?") from None
            return np.full((1, 1, 3), 128, np.uint8), False

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.read(int(index))[0]
        positions = range(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=int)
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            decoded = list(pool.map(lambda i: self.read(int(i))[0], positions))
        return np.stack(decoded) if decoded else np.zeros((0, *self.size, 3), np.uint8)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(f"{self!r} are not decoded as one array (they may not fit in memory); read them in "
                        "batches (FileImages.batches) or index a part")

    def batches(self, batch_size: int):
        """``(positions, images)`` numpy batches, in order, of the files that can be read."""
        import tensorflow as tf

        ds = tf.data.Dataset.range(len(self)).map(_positioned(self), num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=True)
        ds = ds.filter(_is_readable_at).map(_without_flag_at)
        for positions, images in ds.batch(batch_size).prefetch(2).as_numpy_iterator():
            yield positions, images

    def digest(self) -> str:
        """What identifies these files at this size without decoding them (paths, sizes, times)."""
        h = hashlib.sha1(repr(self.size).encode())
        for i, path in enumerate(self.paths):
            h.update(f"{path}\0{self.fingerprint_of(i)}\0".encode())
        return h.hexdigest()

    def fingerprint_of(self, i: int) -> str:
        """What identifies file ``i`` without decoding it: its size and modification time."""
        st = os.stat(self.paths[i])
        return f"{st.st_size}:{st.st_mtime_ns}"


def _positioned(images: FileImages):
    def read_at(i):
        return (i, *_read_op(images, i))

    return read_at


def _is_readable_at(i, image, ok):
    return ok


def _without_flag_at(i, image, ok):
    return i, image


def _read_op(images: FileImages, i):
    """``(image uint8 (H, W, 3), readable bool)`` of file ``i`` (a tensor) inside a tf.data map:
    decoded in Python (Pillow releases the GIL), resized in the graph by the same
    :func:`~keras_transfer.data.images.resize` (resizing eagerly, image by image, costs more than the decoding)."""
    import tensorflow as tf

    image, ok = tf.numpy_function(lambda j: images.decode(int(j)), [i], [tf.uint8, tf.bool], stateful=False)
    pixels = tf.cast(images_lib.resize(tf.ensure_shape(image, (None, None, 3)), images.size), tf.uint8)
    return tf.ensure_shape(pixels, (*images.size, 3)), tf.ensure_shape(ok, ())


def gather(arrays: list[DiskFeatures], rows, views=None):
    """Rows ``rows`` (int64 ``(B,)``) of ``arrays[views[i]]`` (of ``arrays[0]`` without views), float32."""
    import tensorflow as tf

    def take(r, v):
        out = np.empty((len(r), *arrays[0].shape[1:]), "float32")
        for j in np.unique(v):
            out[v == j] = arrays[int(j)].rows(r[v == j])
        return out

    v = views if views is not None else tf.zeros_like(rows, tf.int32)
    out = tf.numpy_function(take, [rows, v], tf.float32, stateful=False)
    return tf.ensure_shape(out, (None, *arrays[0].shape[1:]))


def read(ds, images: FileImages, share: tuple[int, int] = (1, 0), in_order=None):
    """``ds`` of ``(position, *rest)`` -> ``(image, *rest)``: this worker's ``share = (workers,
    index)`` of the elements (equal shares: the fewer than ``workers`` left over sit out this
    epoch; taken after ``ds``'s shuffle, the workers' batches together are one worker's), their
    files decoded in parallel. A file that fails now is left out (and recorded) and the epoch is
    filled up to its length from this share of ``in_order`` (``ds`` before its shuffle), read only
    then: Keras's ``fit`` counts an epoch's steps from the first one (a shorter first epoch shifts
    its learning-rate schedule), and every worker must take as many steps as the others."""
    import tensorflow as tf

    workers, index = share
    n = len(images) // workers

    def decoded(elements):
        if workers > 1:
            elements = elements.take(n * workers).shard(workers, index)
        elements = elements.map(_reader(images), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return elements.filter(_is_readable).map(_without_flag)

    refill = decoded(in_order if in_order is not None else ds).repeat()  # (ends if the share yields nothing)
    return decoded(ds).concatenate(refill).take(n).apply(tf.data.experimental.assert_cardinality(n))


def _reader(images: FileImages):
    def read_one(i, *rest):
        return (*_read_op(images, i), *rest)

    return read_one


def _is_readable(image, ok, *rest):
    return ok


def _without_flag(image, ok, *rest):
    return (image, *rest)
