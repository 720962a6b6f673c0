"""Atomic, durable writes: a reader (or a crash, a power cut) sees the old file or the new one,
never half of one.

A rename alone is not enough: without ``fsync`` a power cut can leave the new name pointing at a
file whose blocks never reached the disk (the right size, zeros inside). So the new file (or
every file of a new folder) is flushed before the rename, and the folder holding the name after.

Temporaries are named ``.tmp-<pid>-...`` beside their target, so the leftovers of a killed
process (whose pid no longer runs) can be told from a running writer's and removed
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path beside ``path`` (same suffix, same folder); on success it
    replaces ``path`` with one rename, on failure it is removed and ``path`` is untouched."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(), suffix=f"-{name}", dir=folder)
    os.close(fd)
    os.remove(tmp)  # writers such as Keras want to create the file themselves
    try:
        yield tmp
        sync_tree(tmp)
        os.replace(tmp, path)
        sync_folder(folder)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)


def _fsync(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a folder; the files themselves were
        if not directory:
            raise
    finally:
        os.close(fd)


def sync_folder(folder: str) -> None:
    """Flush ``folder``'s entries (a rename into it, a new file's name) to disk."""
    _fsync(folder, directory=True)


def sync_tree(path: str) -> None:
    """Flush the file ``path``, or every file and folder under the folder ``path``, to disk."""
    if not os.path.isdir(path):
        _fsync(path)
        return
    for folder, _, names in os.walk(path):
        for name in names:
            _fsync(os.path.join(folder, name))
        sync_folder(folder)


def temporary_prefix() -> str:
    return f".tmp-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: str) -> list[str]:
    """Remove the ``.tmp-<pid>-*`` files and folders in ``folder`` left by processes that no
    longer run (a killed export's half-written version); returns what was removed."""
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        match = re.match(r"\.tmp-(\d+)-", name)
        if not match or _running(int(match.group(1))):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
        removed.append(path)
        logger.info(f"removed {path}, left by a process that was stopped while writing it")
    return removed


def cannot_read(path: str, err: BaseException, advice: str) -> ValueError:
    """The error for a checkpoint, model or export at ``path`` that fails to load with ``err``
    (a truncated HDF5 file, a zip cut short...): one line naming it, then ``advice``."""
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return ValueError(f"{path} cannot be read ({reason}): it was damaged or cut short. {advice} Received: {path}")


def write_json(path: str, obj) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def read_json(path: str, default=None):
    """``path``'s JSON, ``default`` if there is no such file; a damaged file is an error naming it."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}): it was damaged or "
                             f"written by something else; move it away or fix it. Received: {path}") from None
