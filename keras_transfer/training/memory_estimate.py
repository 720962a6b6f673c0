"""What a run will hold besides its pixels, estimated before the data is read: the features the
cache keeps per image, and whether each image is read once (for ``in_memory="auto"``)."""

from __future__ import annotations

import dataclasses

import keras

from keras_transfer import data as data_lib
from keras_transfer.models.surgery import resolve_frozen
from keras_transfer.training import distribute
from keras_transfer.training.feature_cache import feature_bytes, split_model
from keras_transfer.training.model import build_model
from keras_transfer.training.recipes import Recipe


@dataclasses.dataclass
class CacheEstimate:
    """What the feature cache will hold when a model trains under a recipe (see :func:`estimate_cache`)."""

    bytes_per_image: int  # features kept per image (each stage's cached prefix, every view), in the compute dtype
    read_once: bool  # every stage trains on cached features of the plain images: each image is read once


def cache_estimate(model: keras.Model, recipe: Recipe) -> CacheEstimate:
    """:class:`CacheEstimate` of ``model`` under ``recipe``: what a run holds in memory per image
    besides its pixels, and whether holding the pixels buys anything (not when each is read once)."""
    views = recipe.views()
    total, every_stage = 0, True
    for stage, epochs, frozen in (("head", recipe.head_epochs, "all"), ("fine_tune", recipe.fine_tune_epochs, recipe.frozen)):
        if not epochs:
            continue
        scaled = stage == "fine_tune" and recipe.transferred_lr_scale is not None
        parts = None if scaled or not recipe.cache_features else split_model(model, resolve_frozen(model, frozen))
        if parts is None:
            every_stage = False
            continue
        total += (views.count if views else 1) * feature_bytes(parts[0])
    return CacheEstimate(total, every_stage and views is None)


def estimate_cache(backbone: str, input_size: int, recipe: Recipe, removed: int = 0, include_top: bool = False,
                   head: str = "gap_dense") -> CacheEstimate:
    """:func:`cache_estimate` before the data is read: on a random-weight model of ``backbone`` at
    ``input_size`` with ``removed`` units removed (the cut of ``removed="auto"`` is not known yet:
    0), in the precision policy in force."""
    template = build_model(backbone, 2, weights=None, input_size=input_size, removed=removed, head=head,
                           include_top=include_top, drop_path=recipe.drop_path, **recipe.head_options())
    return cache_estimate(template, recipe)


def run_cost(backbone: str, input_size: int, recipe: Recipe, removed: int = 0, include_top: bool = False,
             head: str = "gap_dense", strategy=None) -> data_lib.RunCost:
    """What a run will do with its images (:class:`keras_transfer.data.in_memory.RunCost`: its cached bytes
    an image and whether it reads each image once, see :func:`estimate_cache`; the workers of
    ``strategy``'s cluster), for ``in_memory="auto"`` to weigh before the data is read."""
    estimate = estimate_cache(backbone, input_size, recipe, removed, include_top, head)
    workers = distribute.input_share(strategy)[0] if strategy is not None and distribute.is_multi_worker(strategy) else 1
    return data_lib.RunCost(estimate.bytes_per_image, estimate.read_once, workers)
