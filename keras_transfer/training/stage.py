"""One stage of a recipe (the head, or fine-tuning): planned once (:func:`plan_stage`: cached
inputs or not, the model fitted, its data), then fitted (:func:`fit_stage`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os

import keras
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer._utils.keras_internals import fit_under_multi_worker
from keras_transfer.models import heads
from keras_transfer.models.surgery import backbone_of, freeze, resolve_frozen
from keras_transfer.training import distribute, recipes
from keras_transfer.training.batched_inference import batched_call
from keras_transfer.training.best_epoch import KeepBestEpoch
from keras_transfer.training.callbacks import Backup, SeesClassifier
from keras_transfer.training.feature_cache import (
    POOLED,
    FeatureCache,
    _fingerprint,
    feature_bytes,
    prefix_model,
    split_model,
)
from keras_transfer.training.linear_probe import fit_linear
from keras_transfer.training.model import build_model
from keras_transfer.training.recipes import Recipe

logger = logging.getLogger("keras_transfer.training")


def freeze_for_stage(model: keras.Model, recipe: Recipe, stage: str, k: int) -> bool:
    """Freeze backbone layers ``[:k]`` as ``stage`` wants; True if they train at a reduced rate instead."""
    scaled = stage == "fine_tune" and recipe.transferred_lr_scale is not None
    freeze(model, 0 if scaled else k)
    if recipe.bn_inference:  # keras.io: fine-tuning a small dataset must not retune BatchNorm statistics
        for layer in backbone_of(model).layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return scaled


def lr_scales(model: keras.Model, recipe: Recipe, stage: str, k: int) -> dict[str, float]:
    """Per-variable learning-rate factors of ``stage``: the head at 1, the unfrozen backbone at
    ``backbone_lr_scale``, layers ``[:k]`` at ``transferred_lr_scale`` when they are not frozen."""
    if stage == "head":
        return {}
    base = backbone_of(model)
    scales = {}
    for i, layer in enumerate(base.layers):
        below = i < k and recipe.transferred_lr_scale is not None
        factor = recipe.transferred_lr_scale if below else recipe.backbone_lr_scale
        scales.update({v.path: float(factor) for v in layer.trainable_weights})
    return {p: f for p, f in scales.items() if f != 1.0}


# set on a callback that does not need to see the head stage's epochs (Keras Tuner's own per-trial
# bookkeeping): with only such callbacks, and no run folder, a head trained before may be reused
REUSED_HEAD_IS_FINE = "keras_transfer_reused_head_is_fine"


@dataclasses.dataclass
class StagePlan:
    """How one stage trains, decided once before it is fitted (see :func:`plan_stage`)."""

    stage: str  # "head" or "fine_tune"
    epochs: int
    k: int  # backbone layers [:k] frozen (or, ``scaled``, at a reduced rate)
    scaled: bool  # layers [:k] train at ``recipe.transferred_lr_scale`` instead of being frozen
    fit_model: keras.Model  # the classifier, or its trainable suffix on cached features
    x_train: np.ndarray | list | None  # images or cached frozen-prefix features, a list of one per view (None: streamed data)
    x_val: np.ndarray | None
    how: str
    at_top: bool  # the cached features are the backbone's outputs (what the head's init needs)


def plan_stage(model: keras.Model, splits, recipe: Recipe, stage: str, epochs: int, k: int, strategy=None,
               cache: FeatureCache | None = None) -> StagePlan:
    """Decide how ``stage`` trains: on cached frozen-prefix features when worthwhile (in-memory
    data, layers ``[:k]`` frozen rather than at a reduced rate, a prefix that saves enough and
    fits the cache; see :func:`~keras_transfer.training.feature_cache.split_model`), computing them (from
    the deepest shallower cut cached, if any; under augmentation, those of every view of the
    training images), else on the images."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    cache = cache if cache is not None else FeatureCache()
    scaled = stage == "fine_tune" and recipe.transferred_lr_scale is not None
    plan = functools.partial(StagePlan, stage, epochs, k, scaled)
    if isinstance(splits, data_lib.Streams):
        if recipe.augment:
            raise ValueError("augmented views need in-memory splits. Received: augment="
                             f"{recipe.augment!r} with streamed data")
        return plan(model, None, None, "end to end on streamed data", False)
    if splits.streamed and cache.disk is None:  # the features of files go to disk
        return plan(model, splits.train.images, splits.val.images, "end to end, streaming the files", False)
    parts = None
    views = recipe.views()
    if recipe.cache_features and not scaled:
        with strategy.scope():  # Keras ties a model to the strategy it was created under
            parts = split_model(model, k)
    n_cached = len(splits.train) * (views.count if views else 1) + len(splits.val)
    if parts is not None and not cache.fits(parts[0], n_cached, splits.streamed):
        logger.info("[%s] %s features would not fit the feature cache (%.0f MB): training end to end",
                    stage, parts[2], cache.max_bytes / 2**20)
        parts = None
    if parts is None:
        return plan(model, splits.train.images, splits.val.images,
                    "end to end" + (", streaming the files" if splits.streamed else ""), False)
    prefix, suffix, cut_name = parts
    if views is None:
        x_train = cache.features(prefix, cut_name, splits.train.images, recipe.batch_size, strategy=strategy)
    else:
        logger.info("[%s] %s features of %d %s views of the %d training images (each computed once, then cached)",
                    stage, cut_name, views.count, views.kind, len(splits.train))
        x_train = [cache.features(prefix, cut_name, splits.train.images, recipe.batch_size, views, v, strategy)
                   for v in range(views.count)]
    x_val = cache.features(prefix, cut_name, splits.val.images, recipe.batch_size, strategy=strategy)
    how = (f"on cached {cut_name} features" + (f" of {views.count} {views.kind} views" if views else "")
           + f" ({_size(feature_bytes(prefix))} an image" + (", on disk)" if isinstance(x_val, data_lib.DiskFeatures) else ")"))
    top = backbone_of(model).layers[-1].name
    return plan(suffix, x_train, x_val, how, cut_name in (top, top + POOLED))


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
                           include_top=include_top, **recipe.head_options())
    return cache_estimate(template, recipe)


def run_cost(backbone: str, input_size: int, recipe: Recipe, removed: int = 0, include_top: bool = False,
             head: str = "gap_dense", strategy=None) -> data_lib.RunCost:
    """What a run will do with its images (:class:`keras_transfer.data.in_memory.RunCost`: its cached bytes
    an image and whether it reads each image once, see :func:`estimate_cache`; the workers of
    ``strategy``'s cluster), for ``in_memory="auto"`` to weigh before the data is read."""
    estimate = estimate_cache(backbone, input_size, recipe, removed, include_top, head)
    workers = distribute.input_share(strategy)[0] if strategy is not None and distribute.is_multi_worker(strategy) else 1
    return data_lib.RunCost(estimate.bytes_per_image, estimate.read_once, workers)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KB" if nbytes >= 1024 else f"{nbytes} bytes"


# images of each part a streamed set's head starts from: pooled features of 4096 images estimate
# each feature's mean and variance to about 1.6 % of its standard deviation
HEAD_INIT_SAMPLE = 4096


def init_head(model: keras.Model, splits: data_lib.Splits, recipe: Recipe, base_train=None, base_val=None) -> None:
    """Before the head trains: standardise its features with the training images' statistics and,
    for a linear head under ``recipe.linear_probe``, start it at the converged linear probe (LP-FT).

    ``base_train``/``base_val``: the backbone's outputs on the train/val images if already at hand;
    ``base_train`` may be a list, one per augmented view: the head then starts from what it will
    train on, every view (a probe of view 0 alone is over-confident on the others). Streamed
    splits start it from a stratified sample of at most :data:`HEAD_INIT_SAMPLE` images of each
    part, the same on every worker (a pass over every file on each would undo their sharding).
    """
    probe_it = recipe.linear_probe and heads.linear_classifier(model) is not None
    if heads.feature_norm(model) is None and not probe_it:
        return
    y_val, prefix, views = None, None, recipe.views()
    if isinstance(base_train[0] if isinstance(base_train, list) else base_train, data_lib.DiskFeatures):
        each = [_disk_sample(d, splits.train.labels, recipe.seed)  # cached on disk: a sample of their rows
                for d in (base_train if isinstance(base_train, list) else [base_train])]
        base_train, y_train = (np.concatenate(parts) for parts in zip(*each))
        base_val, y_val = (_disk_sample(base_val, splits.val.labels, recipe.seed)
                           if isinstance(base_val, data_lib.DiskFeatures) else (base_val, splits.val.labels))
    else:
        if isinstance(splits, data_lib.Splits) and splits.streamed:
            splits = dataclasses.replace(
                splits, train=data_lib.stratified_sample(splits.train, HEAD_INIT_SAMPLE, recipe.seed),
                val=data_lib.stratified_sample(splits.val, HEAD_INIT_SAMPLE, recipe.seed))
        prefix = prefix_model(model) if base_train is None or (probe_it and base_val is None) else None
        if base_train is None and views is not None and isinstance(splits.train, data_lib.ImageSet):
            each = [_features(prefix, splits.train, recipe.batch_size, views, v) for v in range(views.count)]
            base_train, y_train = (np.concatenate(parts) for parts in zip(*each))
        elif base_train is None:
            base_train, y_train = _features(prefix, splits.train, recipe.batch_size)
        elif isinstance(base_train, list):  # pooled first: 1x1 maps of every view, not V copies of the maps
            base_train = np.concatenate([_pooled_maps(b) for b in base_train])
            y_train = np.tile(splits.train.labels, len(base_train) // len(splits.train))
        else:
            y_train = splits.train.labels
    heads.adapt_feature_norm(model, base_train)
    if not probe_it:
        return
    if base_val is None:
        base_val, y_val = _features(prefix, splits.val, recipe.batch_size)
    elif y_val is None:
        y_val = splits.val.labels
    x_val = heads.pooled_features(model, base_val) if base_val is not None and len(y_val) else None
    fitted = fit_linear(heads.pooled_features(model, base_train), y_train, len(splits.class_names),
                        x_val, y_val if x_val is not None else None, seed=recipe.seed)
    heads.linear_classifier(model).set_weights([fitted.kernel, fitted.bias])


def _disk_sample(features: data_lib.DiskFeatures, labels: np.ndarray, seed: int):
    """``(pooled (n, 1, 1, C) maps, labels)`` of a stratified sample of at most :data:`HEAD_INIT_SAMPLE`
    of the images whose features are on disk (those that were read)."""
    readable = np.flatnonzero(features.ok)
    rows = readable[data_lib.stratified_index(labels[readable], HEAD_INIT_SAMPLE, seed)]
    return _pooled_maps(features.rows(rows)), labels[rows]


def _pooled_maps(features: np.ndarray) -> np.ndarray:
    """``(N, h, w, C)`` maps as ``(N, 1, 1, C)``: their global average, still a map for the head's helpers."""
    return np.asarray(features, "float32").mean(axis=(1, 2), keepdims=True)


def _features(prefix, part, batch_size: int, views=None, view: int = 0):
    """``(backbone features, labels)`` of an ImageSet (of its view ``view`` of ``views``, if
    given) or a stream of ``(image, label)``; None: no data. Pooled to ``(N, 1, 1, C)`` maps for
    views and for files (their maps may not fit in memory; a file unreadable now is left out)."""
    if part is None or (isinstance(part, data_lib.ImageSet) and not len(part)):
        return None, np.zeros(0, int)
    transform = (lambda x: views.apply(x, view)) if views is not None else None
    if isinstance(part, data_lib.ImageSet) and part.streamed:
        chunks = [(_pooled_maps(batched_call(prefix, images, batch_size, transform)), part.labels[positions])
                  for positions, images in part.images.batches(batch_size)]
    elif isinstance(part, data_lib.ImageSet):
        out = batched_call(prefix, part.images, batch_size, transform)
        return (out if views is None else _pooled_maps(out)), part.labels
    else:
        chunks = [(batched_call(prefix, np.asarray(x), batch_size), np.asarray(y)) for x, y in part.batch(batch_size)]
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])


def _callbacks(model, fit_model, recipe, stage, run_dir, resume, has_val, extra):
    # the best epoch by the one rule (best_epoch): kept at the end, and what early stopping watches
    cbs = [KeepBestEpoch(recipe.patience)] if has_val else []
    if run_dir:
        cbs += [
            Backup(os.path.join(run_dir, "backup", stage), double_checkpoint=True),
            keras.callbacks.CSVLogger(os.path.join(run_dir, f"{stage}.csv"), append=resume),
        ]
        if recipe.tensorboard is not None:
            cbs.append(keras.callbacks.TensorBoard(os.path.join(recipe.tensorboard or os.path.join(run_dir, "tensorboard"),
                                                                stage)))
    extra = list(extra or [])
    if extra and fit_model is not model:
        extra = [SeesClassifier(extra, model)]  # the caller's callbacks see the classifier, not the suffix
    return cbs + extra  # after the checkpoints, so they have seen the epoch first


def train_stage(model: keras.Model, splits: data_lib.Splits, recipe: Recipe, stage: str, epochs: int, k: int,
                strategy=None, cache: FeatureCache | None = None, **fit_options) -> dict:
    """One stage of the recipe: ``"head"`` (``k`` = every backbone layer) or ``"fine_tune"``:
    :func:`plan_stage`, then :func:`fit_stage` (``fit_options``: its ``run_dir``, ``resume``,
    ``callbacks``). Returns the Keras history dict."""
    cache = cache if cache is not None else FeatureCache()
    return fit_stage(model, plan_stage(model, splits, recipe, stage, epochs, k, strategy, cache), splits, recipe,
                     strategy, cache, **fit_options)


def fit_stage(model: keras.Model, plan: StagePlan, splits, recipe: Recipe, strategy=None,
              cache: FeatureCache | None = None, run_dir: str | None = None, resume: bool = False,
              callbacks: list | None = None) -> dict:
    """Fit one planned stage: freeze ``[:plan.k]``; for the head stage standardise the head's
    features and start it at the linear probe (or reuse a head trained before from the same
    start, see :class:`~keras_transfer.training.feature_cache.HeadMemo`); compile ``plan.fit_model`` with
    the recipe's optimiser, loss and schedule; fit. Returns the Keras history dict."""
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    cache = cache if cache is not None else FeatureCache()
    stage, epochs, k = plan.stage, plan.epochs, plan.k
    freeze_for_stage(model, recipe, stage, k)
    key = None  # the head stage's HeadMemo key, when its result may be reused
    if stage == "head":
        init_head(model, splits, recipe, plan.x_train if plan.at_top else None, plan.x_val if plan.at_top else None)
        memo = not run_dir and all(getattr(cb, REUSED_HEAD_IS_FINE, False) for cb in callbacks or [])
        key = head_key(model, splits, recipe, epochs, strategy) if memo else None
        reused = cache.heads.get(key) if key else None
        if reused is not None:
            model.get_layer("head").set_weights(reused[0])
            logger.info("[head] trained before from the same start, data and recipe: reused")
            return reused[1]
    logger.info("[%s] %d epoch(s), backbone layers [:%d] of %d frozen%s, training %s", stage, epochs,
                0 if plan.scaled else k, len(backbone_of(model).layers),
                f" (layers [:{k}] at lr x{recipe.transferred_lr_scale})" if plan.scaled else "", plan.how)
    batch = recipe.batch_size * strategy.num_replicas_in_sync
    n_train = data_lib.stream_size(splits.train, "train") if plan.x_train is None else len(splits.train)
    steps = epochs * max(1, -(-n_train // batch))
    fit_model = plan.fit_model
    with strategy.scope():
        fit_model.compile(optimizer=recipes.optimizer(recipe, stage, steps, lr_scales(model, recipe, stage, k)),
                          **heads.compile_args(model, recipe.label_smoothing))
    train_ds, val_ds, sample = _stage_datasets(model, splits, plan.x_train, plan.x_val, recipe, stage, batch,
                                               strategy)
    if recipe.class_weight and isinstance(splits, data_lib.Streams):
        raise ValueError("class_weight needs in-memory splits (their label counts). Received: class_weight=True")
    class_weight = data_lib.class_weights(splits.train) if recipe.class_weight else None
    multi_worker = distribute.is_multi_worker(strategy)
    with fit_under_multi_worker(fit_model, sample()) if multi_worker else contextlib.nullcontext():
        history = fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                                callbacks=_callbacks(model, fit_model, recipe, stage, run_dir, resume,
                                                     val_ds is not None, callbacks),
                                verbose=recipe.verbose, shuffle=False)
    if key:
        cache.heads.keep(key, model.get_layer("head").get_weights(), history.history)
    return history.history


# Recipe fields only the fine-tuning stage reads: they do not change what the head stage produces
_FINE_TUNE_ONLY = dict(fine_tune_epochs=0, frozen=None, fine_tune_optimizer="", fine_tune_learning_rate=0.0,
                       backbone_lr_scale=0.0, keep_best=False, transferred_lr_scale=None, verbose=0, tensorboard=None)


def _architecture(model: keras.Model) -> list:
    """Every layer's class and configuration, nested models included, names aside (Keras numbers
    unnamed layers anew on every build)."""
    rows = []
    for layer in model.layers:
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "layers", "input_layers", "output_layers")}
        rows.append((type(layer).__name__, repr(config) if not isinstance(layer, keras.Model) else _architecture(layer)))
    return rows


def head_key(model, splits, recipe, epochs, strategy) -> str | None:
    """What the head stage's result depends on: the model (its architecture, e.g. the head's
    dropout, and every weight it starts from, after ``init_head``), the images and labels, the
    recipe's head-stage fields, the epochs, the precision and the replicas. None where it is not
    reused: streamed data, several workers."""
    if isinstance(splits, data_lib.Streams) or splits.streamed or distribute.is_multi_worker(strategy):
        return None
    arrays = model.get_weights() + [splits.train.images, splits.train.labels, splits.val.images, splits.val.labels]
    settings = (_architecture(model), dataclasses.replace(recipe, **_FINE_TUNE_ONLY), epochs,
                keras.mixed_precision.global_policy().name, strategy.num_replicas_in_sync, type(strategy).__name__)
    return _fingerprint(arrays) + hashlib.sha1(repr(settings).encode()).hexdigest()


def _stage_datasets(model, splits, x_train, x_val, recipe, stage, batch, strategy):
    """``(train_ds, val_ds, sample)``: datasets of ``x_train``/``x_val`` (images, files or cached
    features) or of the streams, ``val_ds`` None without validation data, and ``sample()`` a local
    training batch. Files, and features on disk, under several workers: each worker's pipeline reads its share and
    batches for its own replicas (``distribute_datasets_from_function``); batched by the global
    batch instead, tf.distribute would split each of its batches across the workers and Keras
    would count the epoch's steps from it, halving them."""
    if isinstance(splits, data_lib.Streams):
        targets = lambda y: heads.targets(model, y)  # noqa: E731
        train_ds = data_lib.batch_stream(splits.train, batch, targets)
        val_ds = data_lib.batch_stream(splits.val, batch, targets) if splits.val is not None else None
        return train_ds, val_ds, lambda: next(iter(train_ds))
    seed = recipe.seed + (0 if stage == "head" else 1)
    y_train, y_val = heads.targets(model, splits.train.labels), heads.targets(model, splits.val.labels)
    train = functools.partial(data_lib.to_dataset, x_train, y_train, shuffle=True, seed=seed, views=recipe.views())
    val = functools.partial(data_lib.to_dataset, x_val, y_val) if len(splits.val) else None
    first = x_train[0] if isinstance(x_train, list) else x_train
    if not (isinstance(first, (data_lib.FileImages, data_lib.DiskFeatures)) and distribute.is_multi_worker(strategy)):
        train_ds = train(batch)
        return train_ds, val(batch) if val else None, lambda: next(iter(train_ds))

    def per_worker(make):
        return strategy.distribute_datasets_from_function(lambda context: make(
            context.get_per_replica_batch_size(batch), share=(context.num_input_pipelines, context.input_pipeline_id)))

    share = distribute.input_share(strategy)
    return (per_worker(train), per_worker(val) if val else None,
            lambda: next(iter(train(batch // strategy.num_replicas_in_sync, share=share))))
