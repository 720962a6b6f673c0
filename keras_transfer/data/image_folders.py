"""A folder of images, one sub-folder per class: listed, checked and decoded in parallel, bad files
skipped and reported.
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv
import itertools
import logging
import os
from typing import Sequence

import numpy as np

from keras_transfer.data.image_sets import ImageSet, _size
from keras_transfer.data.images import read_image
from keras_transfer.data.in_memory import RunCost, streams
from keras_transfer.data.streaming import (
    FileImages,
    SkippedFile,
    check_file,
    skip_reason,
)

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


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
    for path, label, result, err in each_file(jobs, work, "checking images" if stream else "reading images",
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


def each_file(jobs, work, desc: str, workers: int | None, progress: bool):
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




def write_skipped_report(skipped: Sequence[SkippedFile], path: str) -> None:
    """``path`` (CSV: path, reason), one row per skipped file; header only when none were."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows((s.path, s.reason) for s in skipped)


def image_paths(paths) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, folders walked (their image files, sorted); ``(files, missing)``, where
    ``missing`` names each path that gave no file and why."""
    files, missing = [], []
    for path in map(str, paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
                           if name.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                missing.append((path, f"a folder with no {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files"))
            files += found
        elif os.path.exists(path):
            files.append(path)
        else:
            missing.append((path, "no such file or folder"))
    return files, missing


def as_images(images, size) -> np.ndarray:
    """uint8 images ``(N, H, W, 3)`` as given, or the images named by a path or a list of paths
    (files, folders walked) read as training reads them, at ``size``. A path that gives no image
    or a file that cannot be read is named in the error."""
    is_path = isinstance(images, (str, os.PathLike))
    if not (is_path or (isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)))):
        return np.asarray(images)
    files, missing = image_paths([images] if is_path else images)
    if missing:
        raise FileNotFoundError(f"{missing[0][0]!r}: {missing[0][1]}. Received: {missing[0][0]!r}")
    decoded = []
    for path in files:
        try:
            decoded.append(read_image(path, size))
        except Exception as err:  # noqa: BLE001 - any decoder failure: say which file
            raise ValueError(f"cannot read {path!r} as an image ({type(err).__name__}: {err}); remove or replace "
                             f"it. Received: {path!r}") from None
    return np.stack(decoded)
