"""The A/B class splits the transfer experiments share (Yosinski et al. 2014): one dataset, its
classes split in two, each part split into train/val/test images."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from keras_transfer import data

#: A semantic split of Fashion-MNIST: A = upper-body garments, B = trousers, footwear and bags.
FASHION_TOPS = ("t-shirt", "pullover", "dress", "coat", "shirt")


@dataclasses.dataclass
class ABSplits:
    a: data.Splits
    b: data.Splits


def load_pool(data_dir: str | None, dataset: str | None, input_size: int, limit_per_class: int | None,
              seed: int = 0, in_memory: str = "auto") -> data.ImageSet:
    """The images to split: a folder or a built-in dataset, held in memory or streamed (``in_memory``)."""
    if data_dir:
        pool = data.load_folder(data_dir, input_size, progress=False, in_memory=in_memory)
        return data.limit_per_class(pool, limit_per_class, seed) if limit_per_class else pool
    return data.builtin(dataset, input_size, limit_per_class, seed, in_memory)


def ab_splits(pool: data.ImageSet, a_classes: Sequence[str] | None, seed: int) -> ABSplits:
    """Classes into A and B (``a_classes`` named, else random halves from ``seed``), then each
    part into 70/10/20 train/val/test images from ``seed``."""
    a, b = data.split_classes(pool, a_classes, seed=seed)
    return ABSplits(data.split(a, 0.1, 0.2, seed), data.split(b, 0.1, 0.2, seed))


def named_splits(dataset: str | None, a_classes: Sequence[str] | None) -> dict[str, tuple | None]:
    """``{split name: A's classes or None (random)}``: random halves, plus the user's named split
    (or, on Fashion-MNIST, tops vs the rest)."""
    if a_classes:
        return {"random": None, "named": tuple(a_classes)}
    if dataset == "fashion_mnist":
        return {"random": None, "tops": FASHION_TOPS}
    return {"random": None}
