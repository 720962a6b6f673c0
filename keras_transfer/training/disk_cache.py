"""Frozen-prefix features on disk, for sets whose features (or images) do not fit in memory.

One entry per key (what :class:`~keras_transfer.training.cache.FeatureCache` keys by: the cut,
the prefix's weights, the images, the view) under ``directory``: ``<key>.npy`` (the features,
float32, memory-mapped when read) and ``<key>.ok.npy`` (which images could be read). An entry is
computed in chunks of :data:`CHUNK` images, each written atomically into ``<key>.part/``, so a
run killed half-way resumes from its last chunk; the finished entry is assembled, then renamed
into place, so a reader never sees half of one. Entries are shared by every process that uses
the directory (a search's trials, reruns) and evicted least recently used first once they
pass ``max_bytes``.
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np

from keras_transfer.files import atomic_path, remove_stale_temporaries
from keras_transfer.streaming import DiskFeatures

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
        path = self._path(key)
        if not (os.path.exists(path) and os.path.exists(self._path(key, ".ok.npy"))):
            return None
        os.utime(path)  # most recently used
        return DiskFeatures(path, np.load(self._path(key, ".ok.npy")))

    def features(self, key: str, n: int, compute_chunk) -> DiskFeatures:
        """The entry ``key`` of ``n`` rows: read, or computed chunk by chunk with ``compute_chunk(start,
        stop) -> (features, ok)`` (chunks an earlier, killed run finished are not computed again)."""
        found = self.get(key)
        if found is not None:
            return found
        part = self._path(key, ".part")
        os.makedirs(part, exist_ok=True)
        remove_stale_temporaries(part)  # a chunk a killed run was writing
        starts = range(0, n, CHUNK)
        for start in starts:
            chunk = os.path.join(part, f"{start:09d}.npz")
            if os.path.exists(chunk):
                continue
            features, ok = compute_chunk(start, min(start + CHUNK, n))
            with atomic_path(chunk) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, features=np.asarray(features, "float32"), ok=np.asarray(ok, bool))
            self.computed_chunks += 1
            logger.info("feature cache on disk: %d of %d images", min(start + CHUNK, n), n)
        self._assemble(key, part, starts, n)
        self.evict(keep=key)
        return self.get(key)

    def _assemble(self, key: str, part: str, starts, n: int) -> None:
        oks, out = [], None
        with atomic_path(self._path(key)) as tmp:
            for start in starts:
                with np.load(os.path.join(part, f"{start:09d}.npz")) as chunk:
                    if out is None:
                        out = np.lib.format.open_memmap(tmp, mode="w+", dtype="float32",
                                                        shape=(n, *chunk["features"].shape[1:]))
                    out[start:start + len(chunk["ok"])] = chunk["features"]
                    oks.append(chunk["ok"])
            out.flush()
            del out
        with atomic_path(self._path(key, ".ok.npy")) as tmp:
            np.save(tmp, np.concatenate(oks))
        shutil.rmtree(part, ignore_errors=True)

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
            for suffix in (".npy", ".ok.npy"):
                if os.path.exists(self._path(key, suffix)):
                    os.remove(self._path(key, suffix))
            total -= size
            logger.info("feature cache on disk: evicted %s (%.0f MB)", key, size / 2**20)
