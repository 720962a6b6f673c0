"""Splits from a folder or a built-in name, held in memory or streamed from their files.
"""

from __future__ import annotations

from keras_transfer.data.builtin_sets import builtin
from keras_transfer.data.image_folders import load_folder
from keras_transfer.data.image_sets import Splits, limit_per_class, split
from keras_transfer.data.in_memory import RunCost


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


def from_directory(path: str, image_size=224, validation_split: float = 0.15, test_split: float = 0.15,
                   seed: int = 0, progress: bool = True) -> Splits:
    """``path/<class>/**/*.{jpg,jpeg,png,bmp,gif}`` -> stratified, seeded splits."""
    return split(load_folder(path, image_size, progress=progress), validation_split, test_split, seed)

