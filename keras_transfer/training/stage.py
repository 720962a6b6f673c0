"""One stage of a recipe (the head, or fine-tuning) as an object: :class:`Stage` holds the model,
the data, the recipe, the strategy and the feature cache; :meth:`Stage.plan` decides once how it
trains (on cached frozen-prefix features or end to end), :meth:`Stage.fit` fits it."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer import data as data_lib
from keras_transfer._utils.keras_internals import fit_under_multi_worker
from keras_transfer.models import heads
from keras_transfer.models.surgery import backbone_of, freeze
from keras_transfer.training import distribute, recipes
from keras_transfer.training.best_epoch import KeepBestEpoch
from keras_transfer.training.callbacks import AveragedWeights, Backup, SeesClassifier
from keras_transfer.training.feature_cache import (
    POOLED,
    FeatureCache,
    _fingerprint,
    feature_bytes,
    head_start_features,
    split_model,
)
from keras_transfer.training.linear_probe import fit_linear
from keras_transfer.training.recipes import Recipe

logger = logging.getLogger("keras_transfer.training")

# set on a callback that does not need to see the head stage's epochs (Keras Tuner's own per-trial
# bookkeeping): with only such callbacks, and no run folder, a head trained before may be reused
REUSED_HEAD_IS_FINE = "keras_transfer_reused_head_is_fine"


@dataclasses.dataclass
class StagePlan:
    """How one stage trains, decided once before it is fitted (see :meth:`Stage.plan`)."""

    fit_model: keras.Model  # the classifier, or its trainable suffix on cached features
    x_train: np.ndarray | list | None  # images or cached frozen-prefix features, a list of one per view (None: streams)
    x_val: np.ndarray | None
    how: str
    at_top: bool  # the cached features are the backbone's outputs (what the head's init needs)


@dataclasses.dataclass
class Stage:
    """One stage of ``recipe`` on ``model`` and ``splits``: ``name`` is ``"head"`` (``k`` = every
    backbone layer) or ``"fine_tune"``; backbone layers ``[:k]`` are frozen (or, under the
    recipe's ``transferred_lr_scale``, train at a reduced rate). ``splits`` may hold arrays, files
    (:class:`~keras_transfer.data.Splits`) or streams (:class:`~keras_transfer.data.Streams`): the
    stage asks them, never which kind they are. Models are compiled and fitted under ``strategy``
    (the current one by default); ``cache`` is the feature cache (a new one by default).

    ```python
    >>> stage = Stage(model, splits, recipe, "head", epochs=3, k=len(backbone_of(model).layers))
    >>> history = stage.fit(stage.plan())

    ```
    """

    model: keras.Model
    splits: object
    recipe: Recipe
    name: str
    epochs: int
    k: int
    strategy: object = None
    cache: FeatureCache | None = None

    def __post_init__(self):
        self.strategy = self.strategy or tf.distribute.get_strategy()
        self.cache = self.cache if self.cache is not None else FeatureCache()

    @property
    def scaled(self) -> bool:
        """Layers ``[:k]`` train at ``recipe.transferred_lr_scale`` instead of being frozen."""
        return self.name == "fine_tune" and self.recipe.transferred_lr_scale is not None

    @property
    def jittered(self) -> bool:
        """The recipe's jitter moves this stage's training images (fine-tuning only)."""
        return self.name == "fine_tune" and bool(self.recipe.jitter)

    # ---- freezing and rates ----------------------------------------------------------------

    def freeze(self) -> bool:
        """Freeze backbone layers ``[:k]`` as this stage wants; True if they train at a reduced rate instead."""
        freeze(self.model, 0 if self.scaled else self.k)
        if self.recipe.bn_inference:  # keras.io: fine-tuning a small dataset must not retune BatchNorm statistics
            for layer in backbone_of(self.model).layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        return self.scaled

    def lr_scales(self) -> dict[str, float]:
        """Per-variable learning-rate factors: the head at 1, the unfrozen backbone at
        ``backbone_lr_scale``, layers ``[:k]`` at ``transferred_lr_scale`` when they are not frozen."""
        if self.name == "head":
            return {}
        scales = {}
        for i, layer in enumerate(backbone_of(self.model).layers):
            below = i < self.k and self.recipe.transferred_lr_scale is not None
            factor = self.recipe.transferred_lr_scale if below else self.recipe.backbone_lr_scale
            scales.update({v.path: float(factor) for v in layer.trainable_weights})
        return {p: f for p, f in scales.items() if f != 1.0}

    def backbone_paths(self) -> list[str]:
        """The paths of the backbone's trainable variables (what the recipe's ``l2_sp`` anchors)."""
        return [v.path for v in backbone_of(self.model).trainable_weights]

    # ---- planning ----------------------------------------------------------------------------

    def plan(self) -> StagePlan:
        """Decide how this stage trains: on cached frozen-prefix features when worthwhile (data the
        cache accepts, layers ``[:k]`` frozen rather than at a reduced rate, a prefix that saves
        enough and fits the cache; see :func:`~keras_transfer.training.feature_cache.split_model`),
        computing them (from the deepest shallower cut cached, if any; under augmentation, those of
        every view of the training images), else on the images."""
        x_train, x_val = self.splits.stage_inputs(self.recipe.augment)
        parts = None
        # jittered images move every epoch, so no features of theirs are cached (fit says so, when the
        # stage starts: every stage is planned before the first one trains)
        if not self.jittered and self.cache.accepts(x_train) and self.recipe.cache_features and not self.scaled:
            with self.strategy.scope():  # Keras ties a model to the strategy it was created under
                parts = split_model(self.model, self.k)
        views = self.recipe.views()
        n_cached = len(self.splits.train) * (views.count if views else 1) + len(self.splits.val) if parts else 0
        if parts is not None and not self.cache.fits(parts[0], n_cached, x_train):
            logger.info("[%s] %s features would not fit the feature cache (%.0f MB): training end to end",
                        self.name, parts[2], self.cache.max_bytes / 2**20)
            parts = None
        if parts is None:
            return StagePlan(self.model, x_train, x_val, self.splits.end_to_end, False)
        return self._cached_plan(*parts, views)

    def _cached_plan(self, prefix, suffix, cut_name: str, views) -> StagePlan:
        features = self.cache.features
        batch_size, train, val = self.recipe.batch_size, self.splits.train.images, self.splits.val.images
        if views is None:
            x_train = features(prefix, cut_name, train, batch_size, strategy=self.strategy)
        else:
            logger.info("[%s] %s features of %d %s views of the %d training images (each computed once, then cached)",
                        self.name, cut_name, views.count, views.kind, len(self.splits.train))
            x_train = [features(prefix, cut_name, train, batch_size, views, v, self.strategy) for v in range(views.count)]
        x_val = features(prefix, cut_name, val, batch_size, strategy=self.strategy)
        how = (f"on cached {cut_name} features" + (f" of {views.count} {views.kind} views" if views else "")
               + f" ({_size(feature_bytes(prefix))} an image" + (", on disk)" if self.cache.on_disk(x_val) else ")"))
        top = backbone_of(self.model).layers[-1].name
        return StagePlan(suffix, x_train, x_val, how, cut_name in (top, top + POOLED))

    # ---- the head's start --------------------------------------------------------------------

    def init_head(self, base_train=None, base_val=None) -> None:
        """Before the head trains: standardise its features with the training images' statistics and,
        for a linear head under ``recipe.linear_probe``, start it at the converged linear probe (LP-FT).
        ``base_train``/``base_val``: the backbone's outputs, if at hand (see
        :func:`~keras_transfer.training.feature_cache.head_start_features`)."""
        model, recipe = self.model, self.recipe
        probe_it = recipe.linear_probe and heads.linear_classifier(model) is not None
        if heads.feature_norm(model) is None and not probe_it:
            return
        x_train, y_train, groups, x_val, y_val = head_start_features(model, self.splits, recipe, base_train,
                                                                     base_val, with_val=probe_it)
        heads.adapt_feature_norm(model, x_train)
        if not probe_it:
            return
        x_val = heads.pooled_features(model, x_val) if x_val is not None and len(y_val) else None
        fitted = fit_linear(heads.pooled_features(model, x_train), y_train, len(self.splits.class_names),
                            x_val, y_val if x_val is not None else None, seed=recipe.seed, groups=groups)
        heads.linear_classifier(model).set_weights([fitted.kernel, fitted.bias])

    # ---- fitting -----------------------------------------------------------------------------

    def fit(self, plan: StagePlan, run_dir: str | None = None, resume: bool = False,
            callbacks: list | None = None) -> dict:
        """Fit the planned stage: freeze ``[:k]``; for the head stage standardise the head's
        features and start it at the linear probe (or reuse a head trained before from the same
        start, see :class:`~keras_transfer.training.feature_cache.HeadMemo`); compile
        ``plan.fit_model`` with the recipe's optimiser, loss and schedule; fit. ``run_dir``: where
        its checkpoints and CSV log go (``resume``: append); ``callbacks`` see the classifier.
        Returns the Keras history dict."""
        self.freeze()
        key = None  # the head stage's HeadMemo key, when its result may be reused
        if self.name == "head":
            self.init_head(plan.x_train if plan.at_top else None, plan.x_val if plan.at_top else None)
            memo = not run_dir and all(getattr(cb, REUSED_HEAD_IS_FINE, False) for cb in callbacks or [])
            key = self.head_key() if memo else None
            reused = self.cache.heads.get(key) if key else None
            if reused is not None:
                self.model.get_layer("head").set_weights(reused[0])
                logger.info("[head] trained before from the same start, data and recipe: reused")
                return reused[1]
        if self.jittered:
            logger.info("[%s] jitter %g moves the images every epoch, so the stage trains on them, not on cached "
                        "features", self.name, self.recipe.jitter)
        logger.info("[%s] %d epoch(s), backbone layers [:%d] of %d frozen%s, training %s", self.name, self.epochs,
                    0 if self.scaled else self.k, len(backbone_of(self.model).layers),
                    f" (layers [:{self.k}] at lr x{self.recipe.transferred_lr_scale})" if self.scaled else "", plan.how)
        history = self._fit(plan, run_dir, resume, callbacks)
        if key:
            self.cache.heads.keep(key, self.model.get_layer("head").get_weights(), history)
        return history

    def _fit(self, plan: StagePlan, run_dir, resume, callbacks) -> dict:
        recipe, strategy = self.recipe, self.strategy
        batch = recipe.batch_size * strategy.num_replicas_in_sync
        steps = self.epochs * max(1, -(-self.splits.num_train() // batch))
        with strategy.scope():
            plan.fit_model.compile(optimizer=recipes.optimizer(recipe, self.name, steps, self.lr_scales(),
                                                                       backbone=self.backbone_paths()),
                                   **self.compile_args())
        train_ds, val_ds, sample = self.datasets(plan, batch)
        class_weight = self.splits.class_weights() if recipe.class_weight else None
        multi_worker = distribute.is_multi_worker(strategy)
        with fit_under_multi_worker(plan.fit_model, sample()) if multi_worker else contextlib.nullcontext():
            history = plan.fit_model.fit(train_ds, validation_data=val_ds, epochs=self.epochs, class_weight=class_weight,
                                         callbacks=self._callbacks(plan.fit_model, run_dir, resume, val_ds is not None,
                                                                   callbacks),
                                         verbose=recipe.verbose, shuffle=False)
        return history.history

    def _callbacks(self, fit_model, run_dir, resume, has_val, extra) -> list:
        cbs = []
        if run_dir:  # first: the backup holds the weights training goes on from, not their average
            cbs.append(Backup(os.path.join(run_dir, "backup", self.name), double_checkpoint=True))
        averaged = AveragedWeights() if self.recipe.ema_momentum is not None else None
        if averaged:  # validation, the best epoch and the callbacks after it see the averaged weights
            cbs.append(averaged)
        if has_val:  # the best epoch by the one rule (best_epoch): kept at the end, and what early stopping watches
            cbs.append(KeepBestEpoch(self.recipe.patience))
        elif self.recipe.patience is not None and self.epochs > 1:
            logger.info("%s: no validation images, so early stopping (patience %d) has nothing to watch: all %d "
                        "epochs train and the last is kept", self.name, self.recipe.patience, self.epochs)
        if run_dir:
            cbs.append(keras.callbacks.CSVLogger(os.path.join(run_dir, f"{self.name}.csv"), append=resume))
            if self.recipe.tensorboard is not None:
                logs = self.recipe.tensorboard or os.path.join(run_dir, "tensorboard")
                cbs.append(keras.callbacks.TensorBoard(os.path.join(logs, self.name)))
        extra = list(extra or [])
        if extra and fit_model is not self.model:
            extra = [SeesClassifier(extra, self.model)]  # the caller's callbacks see the classifier, not the suffix
        # after the checkpoints, so they have seen the epoch first; then, if one stopped the fit, the average kept
        return cbs + extra + ([averaged.ender()] if averaged else [])

    def compile_args(self) -> dict:
        """The loss and metrics the stage compiles with: on one-hot labels under mixup (its blends).
        Every fit and ``lr_find`` compiles through here before a pipeline is built, so mixup is
        refused here for a head of two outputs."""
        if self.recipe.mixup and heads.is_multi_output(self.model):
            raise ValueError(f"mixup blends the labels of one output; the {heads.auxiliary_head_name(self.model)} "
                             f"head has two. Received: mixup={self.recipe.mixup}")
        return heads.compile_args(self.model, self.recipe.label_smoothing, one_hot=bool(self.recipe.mixup))

    def datasets(self, plan: StagePlan, batch: int):
        """``(train_ds, val_ds, sample)``: the pipelines of ``plan.x_train``/``x_val`` (images, files or
        cached features) or of the streams, ``val_ds`` None without validation data, and
        ``sample()`` a local training batch. Files, and features on disk, under several workers:
        each worker's pipeline reads its share and batches for its own replicas
        (``distribute_datasets_from_function``); batched by the global batch instead,
        tf.distribute would split each of its batches across the workers and Keras would count
        the epoch's steps from it, halving them."""
        strategy, splits, mix = self.strategy, self.splits, self.recipe.mixup
        targets = lambda y: heads.targets(self.model, y, one_hot=bool(mix))  # noqa: E731
        seed, views = self.recipe.seed + (0 if self.name == "head" else 1), self.recipe.views()

        def train(batch_size, share=(1, 0)):
            batches = splits.train_dataset(plan.x_train, targets, batch_size, seed, views, share)
            if self.jittered:  # after the view is drawn, before the blend: mixup blends moved images
                batches = data_lib.jittered(batches, self.recipe.jitter, seed)
            return data_lib.mixup(batches, mix, seed) if mix else batches

        def val(batch_size, share=(1, 0)):
            return splits.val_dataset(plan.x_val, targets, batch_size, share)

        if not (data_lib.shards_by_file(plan.x_train) and distribute.is_multi_worker(strategy)):
            train_ds = train(batch)
            return train_ds, val(batch), lambda: next(iter(train_ds))

        def per_worker(make):
            return strategy.distribute_datasets_from_function(lambda context: make(
                context.get_per_replica_batch_size(batch), share=(context.num_input_pipelines, context.input_pipeline_id)))

        share = distribute.input_share(strategy)
        return (per_worker(train), per_worker(val) if splits.has_val else None,
                lambda: next(iter(train(batch // strategy.num_replicas_in_sync, share=share))))

    # ---- a head trained before -------------------------------------------------------------

    def head_key(self) -> str | None:
        """What the head stage's result depends on: the model (its architecture, e.g. the head's
        dropout, and every weight it starts from, after ``init_head``), the images and labels, the
        recipe's head-stage fields, the epochs, the precision and the replicas. None where it is not
        reused: data not remembered by its contents (files, streams), several workers."""
        arrays = self.splits.memo_arrays()
        if arrays is None or distribute.is_multi_worker(self.strategy):
            return None
        settings = (_architecture(self.model), dataclasses.replace(self.recipe, **_FINE_TUNE_ONLY), self.epochs,
                    keras.mixed_precision.global_policy().name, self.strategy.num_replicas_in_sync,
                    type(self.strategy).__name__)
        return _fingerprint(self.model.get_weights() + arrays) + hashlib.sha1(repr(settings).encode()).hexdigest()


def train_stage(model: keras.Model, splits, recipe: Recipe, stage: str, epochs: int, k: int, strategy=None,
                cache: FeatureCache | None = None, **fit_options) -> dict:
    """One stage of the recipe, planned then fitted (:class:`Stage`; ``fit_options``: its
    ``run_dir``, ``resume``, ``callbacks``). Returns the Keras history dict."""
    planned = Stage(model, splits, recipe, stage, epochs, k, strategy, cache)
    return planned.fit(planned.plan(), **fit_options)


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024:.1f} KB" if nbytes >= 1024 else f"{nbytes} bytes"


# Recipe fields only the fine-tuning stage reads: they do not change what the head stage produces
_FINE_TUNE_ONLY = dict(fine_tune_epochs=0, frozen=None, fine_tune_optimizer="", fine_tune_learning_rate=0.0,
                       backbone_lr_scale=0.0, keep_best=False, transferred_lr_scale=None, verbose=0, tensorboard=None,
                       jitter=0.0)


def _architecture(model: keras.Model) -> list:
    """Every layer's class and configuration, nested models included, names aside (Keras numbers
    unnamed layers anew on every build)."""
    rows = []
    for layer in model.layers:
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "layers", "input_layers", "output_layers")}
        rows.append((type(layer).__name__, repr(config) if not isinstance(layer, keras.Model) else _architecture(layer)))
    return rows
