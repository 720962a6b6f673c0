"""Frozen-prefix features on disk, for sets whose features (or images) do not fit in memory.

One entry per key (what :class:`~keras_transfer.training.feature_cache.FeatureCache` keys by: the cut,
the prefix's weights, the images, the view) under ``directory``: ``<key>.npy`` (the features,
float32, read row by row), ``<key>.ok.npy`` (which images could be read) and ``<key>.json``
(their shape, sizes and CRC-32s). The ``.npy`` is renamed into place last: the entry exists once
it does, with what checks it beside it. An entry is
computed in chunks of :data:`CHUNK` images, each written atomically into ``<key>.part/``, so a
run killed half-way resumes from its last chunk; the finished entry is assembled, then renamed
into place, so a reader never sees half of one. Entries are shared by every process that uses
the directory (a search's trials, reruns) and evicted least recently used first once they
pass ``max_bytes``.

Every write is flushed to disk before its rename (:func:`~keras_transfer._utils.atomic_files.atomic_path`),
and every entry is checked against its ``.json`` when first opened in a process: one cut short
(a copy, a full disk) or holding zeros where features were (a crash before the data reached the
disk) is logged with its path, removed and computed again, never trained on. A damaged chunk
is computed again the same way.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
import zlib

import numpy as np

from keras_transfer._utils.atomic_files import atomic_path, remove_stale_temporaries, write_json
from keras_transfer.data.streaming import DiskFeatures

logger = logging.getLogger("keras_transfer.training")

CHUNK = 512  # images per resumable chunk


def default_directory() -> str:
    """``$KERAS_TRANSFER_CACHE_DIR``, else ``~/.cache/keras-transfer/features``."""
    return os.environ.get("KERAS_TRANSFER_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras-transfer", "features")


def default_max_bytes(directory: str) -> int:
    """min(20 GiB, a quarter of the free space where ``directory`` is)."""
    probe = directory
    while not os.path.exists(probe):
        probe = os.path.dirname(probe) or "."
    return int(min(20 * 1024**3, shutil.disk_usage(probe).free // 4))


class DiskCache:
    def __init__(self, directory: str | None = None, max_bytes: int | None = None):
        self.directory = directory or default_directory()
        self.max_bytes = int(max_bytes if max_bytes is not None else default_max_bytes(self.directory))
        self.computed_chunks = 0  # chunks this process computed (not read from an earlier run)
        remove_stale_temporaries(self.directory)  # files a killed process was writing

    def _path(self, key: str, suffix: str = ".npy") -> str:
        return os.path.join(self.directory, key + suffix)

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.max_bytes

    def get(self, key: str) -> DiskFeatures | None:
        """The finished entry ``key``, checked; None if there is none (or it was damaged: then it
        is logged and removed, and the caller computes it again)."""
        path = self._path(key)
        if not os.path.exists(path):
            return None
        problem = self._check(key)
        if problem:
            logger.warning("feature cache on disk: %s %s; removed it, its features are computed again", path, problem)
            self._remove(key)
            return None
        os.utime(path)  # most recently used
        _checked.add(_identity(path))
        return DiskFeatures(path, np.load(self._path(key, ".ok.npy")))

    def _check(self, key: str) -> str | None:
        """What is wrong with the entry ``key`` (None: nothing). Its data is read through once per
        process, and again if the file changed since (a finished entry is never written in place)."""
        meta_path, path, ok_path = self._path(key, ".json"), self._path(key), self._path(key, ".ok.npy")
        if not os.path.exists(meta_path):
            return "has no .json beside it (written by an older version, or its .json was lost)"
        try:
            with open(meta_path) as f:
                meta = json.load(f)
            if _identity(path) in _checked:
                return None
            for file, size, crc in ((path, meta["bytes"], meta["crc32"]), (ok_path, meta["ok_bytes"], meta["ok_crc32"])):
                actual = os.path.getsize(file)
                if actual != size:
                    return f"is damaged: {os.path.basename(file)} holds {actual:,} bytes, not {size:,} (cut short?)"
                if _crc32(file) != crc:
                    return f"is damaged: {os.path.basename(file)} does not hold what was written (its CRC-32 differs)"
            shape = DiskFeatures(path, np.ones(0, bool)).shape
            if list(shape) != meta["shape"]:
                return f"is damaged: its features are {list(shape)}, not {meta['shape']}"
        except (OSError, ValueError, KeyError, TypeError) as err:  # unreadable .json or .npy header
            return f"is damaged ({type(err).__name__}: {str(err)[:120]})"
        return None

    def features(self, key: str, n: int, compute_chunk, fresh: bool = False) -> DiskFeatures:
        """The entry ``key`` of ``n`` rows: read, or computed chunk by chunk with ``compute_chunk(start,
        stop) -> (features, ok)`` (chunks an earlier, killed run finished are not computed again).
        ``fresh``: computed, every chunk, whatever is on disk (the workers of a cluster compute
        each chunk together, so none may skip one)."""
        found = None if fresh else self.get(key)
        if found is not None:
            return found
        part = self._path(key, ".part")
        if fresh:
            shutil.rmtree(part, ignore_errors=True)
        os.makedirs(part, exist_ok=True)
        remove_stale_temporaries(part)  # a chunk a killed run was writing
        # written aside, checksummed, then renamed: the .json and .ok.npy first, the .npy (which
        # makes it an entry) last, so an entry always has what checks it
        with atomic_path(self._path(key)) as tmp:
            oks, out = [], None
            for start in range(0, n, CHUNK):
                features, ok = self._chunk(part, start, min(start + CHUNK, n), n, compute_chunk)
                if out is None:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype="float32", shape=(n, *features.shape[1:]))
                out[start:start + len(ok)] = features
                oks.append(ok)
            meta = {"shape": list(out.shape)}
            out.flush()
            del out
            meta.update(bytes=os.path.getsize(tmp), crc32=_crc32(tmp))
            with atomic_path(self._path(key, ".ok.npy")) as ok_tmp:
                np.save(ok_tmp, np.concatenate(oks))
                meta.update(ok_bytes=os.path.getsize(ok_tmp), ok_crc32=_crc32(ok_tmp))
            write_json(self._path(key, ".json"), meta)
        _checked.add(_identity(self._path(key)))  # checksummed as it was written: not read through again
        shutil.rmtree(part, ignore_errors=True)
        self.evict(keep=key)
        return self.get(key)

    def _chunk(self, part: str, start: int, stop: int, n: int, compute_chunk):
        """``(features, ok)`` of rows ``[start, stop)``: the chunk file a run wrote before, else computed and written."""
        chunk = os.path.join(part, f"{start:09d}.npz")
        if os.path.exists(chunk):
            try:
                with np.load(chunk) as saved:  # the zip's CRC-32 is checked as it is read
                    features, ok = saved["features"], saved["ok"]
                if len(ok) == stop - start and len(features) == len(ok):
                    return features, ok
                problem = f"holds {len(ok)} rows, not {stop - start}"
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
                problem = f"cannot be read ({type(err).__name__}: {str(err)[:120]})"
            logger.warning("feature cache on disk: chunk %s %s; computing it again", chunk, problem)
            os.remove(chunk)
        features, ok = compute_chunk(start, stop)
        features, ok = np.asarray(features, "float32"), np.asarray(ok, bool)
        with atomic_path(chunk) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=features, ok=ok)
        self.computed_chunks += 1
        logger.info("feature cache on disk: %d of %d images", stop, n)
        return features, ok

    def _remove(self, key: str) -> None:
        for suffix in (".npy", ".json", ".ok.npy"):  # the .npy first: without it the rest is no entry
            if os.path.exists(self._path(key, suffix)):
                os.remove(self._path(key, suffix))

    def entries(self) -> list[tuple[float, int, str]]:
        """``(last used, bytes, key)`` of every finished entry."""
        if not os.path.isdir(self.directory):
            return []
        rows = []
        for name in os.listdir(self.directory):
            if name.endswith(".npy") and not name.endswith(".ok.npy") and not name.startswith(".tmp-"):
                path = os.path.join(self.directory, name)
                rows.append((os.path.getmtime(path), os.path.getsize(path), name[:-len(".npy")]))
        return rows

    def evict(self, keep: str | None = None) -> None:
        """Remove the least recently used entries until the rest fit in ``max_bytes`` (``keep`` stays)."""
        rows = sorted(self.entries())
        total = sum(size for _, size, _ in rows)
        for _, size, key in rows:
            if total <= self.max_bytes:
                break
            if key == keep:
                continue
            self._remove(key)
            total -= size
            logger.info("feature cache on disk: evicted %s (%.0f MB)", key, size / 2**20)


# the entries this process has checked, as they were then (see _identity)
_checked: set[tuple] = set()


def _identity(path: str) -> tuple:
    stat = os.stat(path)
    return path, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            crc = zlib.crc32(block, crc)
    return crc
