"""Run and search folders that defend themselves.

- :func:`locked`: one process at a time per folder; a second is refused with the holder's pid.
  The lock is an ``flock`` on a hidden file, so a killed process (even by SIGKILL) holds nothing.
- :func:`settings_changes`: what a command asks that differs from what the folder was started
  with (a resumed run or search must ask the same).
- :func:`data_fingerprint` / :func:`data_changes`: which images a folder trained on (a digest of
  each image's pixels, keyed by its file), so that a resume on changed data — whose splits would
  be drawn again and whose test images could be ones the model trained on — is refused, saying
  what changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
from keras_transfer._utils.atomic_files import read_json

logger = logging.getLogger(__name__)

LOCK_FILE = ".keras-transfer.lock"
DATA_FILE = "data.json"


class FolderInUseError(BlockingIOError):
    """Another process holds the folder's lock."""


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path) as f:
            return f.read().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def locked(folder: str, command: str = "keras-transfer"):
    """Hold ``folder``'s lock for the block (creating the folder; if the block fails and the
    folder was created here and is empty, it is removed again: a refused command leaves nothing).

    Raises FolderInUseError naming the holder's pid when another process holds it.
    """
    created = not os.path.exists(folder)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUseError(f"{folder!r} is in use by {_holder(path)}; wait for it to finish or stop it, "
                                   f"or choose another folder. Received: {folder!r}") from None
        try:  # the holder before us may have removed the file between our open and our lock
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} ({command})\n".encode())
        yield
    except BaseException:
        if created and os.listdir(folder) == [LOCK_FILE]:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        os.close(fd)


def contents(folder: str) -> list[str]:
    """The folder's entries other than its lock (an absent folder has none)."""
    return [n for n in os.listdir(folder) if n != LOCK_FILE] if os.path.isdir(folder) else []


def settings_changes(saved: dict, asked, may_change=()) -> list[tuple[str, object, object]]:
    """``(group.key, was, now)`` for each setting ``asked`` (a config, or its ``dataclasses.asdict``)
    that differs from ``saved`` (tuples and lists compare equal), except the groups or
    ``group.key`` names in ``may_change``. A setting ``saved`` does not hold (one the package
    gained after the folder was started) was its default then, so a config's default matches it."""
    defaults = {}
    if dataclasses.is_dataclass(asked):
        defaults, asked = json.loads(json.dumps(dataclasses.asdict(type(asked)()))), dataclasses.asdict(asked)
    asked = json.loads(json.dumps(asked))  # as it would be saved

    def was(group, key):
        held = saved.get(group, {})
        return held[key] if key in held else defaults.get(group, {}).get(key)

    return [(f"{group}.{key}", was(group, key), value)
            for group, values in asked.items() if group not in may_change
            for key, value in values.items() if f"{group}.{key}" not in may_change
            and was(group, key) != value]


def describe_changes(changes) -> tuple[str, str]:
    """``("k=was, ...", "k=now, ...")`` for an error message."""
    return (", ".join(f"{k}={was!r}" for k, was, _ in changes), ", ".join(f"{k}={now!r}" for k, _, now in changes))


def data_fingerprint(splits) -> dict:
    """``{"images": n, "digest": ..., "files": {file: [class, pixel digest]}}`` over every image
    of the splits (a built-in dataset without files is keyed by its images' digests). Streamed
    files are not decoded for it: their digest is of their size and modification time."""
    files = {}
    for part in (splits.train, splits.val, splits.test):
        for i, label in enumerate(part.labels):
            digest = hashlib.blake2b(part.fingerprint_of(i), digest_size=12).hexdigest()
            key = part.paths[i] if part.paths is not None else f"image:{digest}"
            files[key] = [splits.class_names[int(label)], digest]
    total = hashlib.blake2b(json.dumps(sorted(files.items())).encode(), digest_size=16).hexdigest()
    return {"images": len(files), "digest": total, "files": files}


def data_changes(saved: dict, now: dict) -> str | None:
    """None if the same images (same files, classes and pixels), else what changed, in words."""
    if saved.get("digest") == now["digest"]:
        return None
    old, new = saved.get("files", {}), now["files"]
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    parts = [f"{len(names)} {what} (e.g. {names[0]})" for names, what in
             ((added, "image(s) added"), (removed, "removed"), (changed, "changed or moved to another class"))
             if names]
    return ", ".join(parts) or "the images differ"


def check_same_data(folder: str, fingerprint: dict, command: str, consequence: str) -> None:
    """Refuse to go on in ``folder`` with images other than those its ``DATA_FILE`` records
    (ValueError: ``command``, what changed, ``consequence`` and what to do); a folder started
    before fingerprints existed is only warned about."""
    saved = read_json(os.path.join(folder, DATA_FILE))
    if saved is None:
        logger.warning(f"{folder} has no {DATA_FILE} (started by an older version): its data cannot be checked")
        return
    changes = data_changes(saved, fingerprint)
    if changes:
        raise ValueError(f"{command}: the data changed since {folder!r} started: {changes}. {consequence}; go on "
                         f"with the data it started with, or choose another folder. Received: {saved['images']} "
                         f"-> {fingerprint['images']} images")
