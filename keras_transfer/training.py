"""Two-stage fine-tuning, made repeatable, resumable and fast.

Stage 1 trains the head with the whole backbone frozen; stage 2 freezes the first ``k``
backbone layers and trains the rest. What each stage's optimiser, schedule, loss and head are
is a :class:`~keras_transfer.recipes.Recipe` (``default``, the seed tutorial's, keras.io's).

When the first layers are frozen and no augmentation runs before them, their output never
changes, so it is computed once (:class:`FeatureCache`) and only the rest of the network is
trained on it: same result, a fraction of the time. Models are built and compiled inside the
tf.distribute strategy's scope (see :mod:`keras_transfer.distribute`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import weakref

import keras
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import distribute, heads, recipes
from keras_transfer.backbones import build_base
from keras_transfer.files import atomic_path, read_json, write_json
from keras_transfer.internals import fit_under_multi_worker
from keras_transfer.recipes import Recipe, ScaledSGD  # noqa: F401 - part of this module's API
from keras_transfer.surgery import backbone_of, chop, cut_points, freeze, layer_index, multiply_adds, units

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
# Cache a frozen prefix only if skipping it saves at least this share of a training step's
# multiply-adds (a step: the prefix forward, then ~3x the rest for forward + backward). Measured
# on VGG16 (ELPV, 64 px, 3 epochs): freezing through block3_conv3 saves 34% and trains 1.85x
# faster cached; through block3_conv1 saves 16% and ran 1.08x; through block1/block2 ~0.9-1.2x.
MIN_SAVED_FRACTION = 0.2


def _default_cache_bytes() -> int:
    """min(4 GiB, a quarter of this machine's memory)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 1024**3
    return int(min(4 * 1024**3, total // 4))


# ---------------------------------------------------------------- building

def build_model(backbone: str, num_classes: int, weights="imagenet", input_size: int | None = None,
                removed: int = 0, head: str = "gap_dense", include_top: bool = False, strategy=None,
                **head_options) -> keras.Model:
    """``build_base`` -> ``chop(removed=)`` -> head, created inside ``strategy.scope()``."""
    import tensorflow as tf

    from keras_transfer.backbones import get_backbone

    size = input_size or get_backbone(backbone).default_size
    with (strategy or tf.distribute.get_strategy()).scope():
        base = build_base(backbone, weights=weights, include_top=include_top, input_shape=(size, size, 3))
        if removed:
            base = chop(base, removed=removed)
        return heads.build_classifier(base, num_classes, head=head, **head_options)


def default_frozen(model: keras.Model) -> int:
    """Freeze all but the top two units: for InceptionV3 that is ``layers[:249]`` (through
    ``mixed8``), the count Keras's fine-tuning guide uses."""
    base = backbone_of(model)
    names = units(base)
    if len(names) < 3:
        return 0
    return layer_index(base, names[-3]) + 1


def resolve_frozen(model: keras.Model, frozen) -> int:
    """``frozen`` as a layer count: None (the default), an int, a digit string or a layer name."""
    base = backbone_of(model)
    if frozen is None:
        return default_frozen(model)
    if isinstance(frozen, str):
        if frozen == "all":
            return len(base.layers)
        if frozen.lstrip("-").isdigit():
            frozen = int(frozen)
        else:
            return layer_index(base, frozen) + 1
    if not 0 <= frozen <= len(base.layers):
        raise ValueError(f"frozen={frozen} is out of range: {base.name} has {len(base.layers)} layers "
                         f"(use 0..{len(base.layers)}, 'all' or a layer name).")
    return int(frozen)


# ---------------------------------------------------------------- frozen-prefix cache

def split_model(model: keras.Model, k: int):
    """``(prefix, suffix, cut_name)`` for a classifier whose backbone layers ``[:k]`` are frozen.

    ``prefix``: raw images -> the output of the last cut point below ``k`` (all frozen);
    ``suffix``: those features -> the model's outputs, sharing every layer with ``model``.
    ``None`` when caching is not worth it: no cut point above the input is frozen, or skipping
    the prefix would save less than ``MIN_SAVED_FRACTION`` of a training step (low cuts: their
    output is large and cheap to recompute, e.g. VGG16's block1 is 21x the image's floats).
    """
    base = backbone_of(model)
    points = [layer_index(base, p) for p in cut_points(base)]
    below = [i for i in points if 0 < i < k]
    if not below:
        return None
    c = max(below)
    cut = base.layers[c]
    if saved_fraction(model, c) < MIN_SAVED_FRACTION:
        return None
    prefix = prefix_model(model, cut.name)
    features = keras.Input(tuple(cut.output.shape[1:]), name="features")
    x = features
    if c < len(base.layers) - 1:
        x = keras.Model(cut.output, base.output, name=f"{base.name}_suffix")(features)
    suffix = keras.Model(features, model.get_layer("head")(x), name="suffix")
    return prefix, suffix, cut.name


def prefix_model(model: keras.Model, cut_name: str | None = None) -> keras.Model:
    """Raw images -> the backbone's output at ``cut_name`` (default: its top), sharing weights."""
    base = backbone_of(model)
    cut = base.get_layer(cut_name) if cut_name else base.layers[-1]
    images = keras.Input(tuple(model.input_shape[1:]), name="images")
    frozen_part = keras.Model(base.inputs, cut.output, name=f"{base.name}_prefix")
    return keras.Model(images, frozen_part(model.get_layer("preprocess")(images)), name="prefix")


def saved_fraction(model: keras.Model, c: int) -> float:
    """Share of a training step's multiply-adds saved by not running backbone layers ``[:c + 1]``."""
    base = backbone_of(model)
    prefix = multiply_adds(base.layers[:c + 1])
    rest = multiply_adds(base.layers[c + 1:]) + multiply_adds([model.get_layer("head")])
    return prefix / max(prefix + 3 * rest, 1)


def _fingerprint(arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.data)
    return h.hexdigest()


class FeatureCache:
    """Frozen-prefix outputs, shared by every run or trial with the same prefix and images.

    Key: (the prefix's cut layer, a hash of its weights, a hash of the images). So two trials
    with the same backbone, weights, input size and frozen prefix compute features once, and a
    different prefix can never be served stale features. Rule for what is kept: least recently
    used entries are evicted once the total passes ``max_bytes`` (default: 4 GiB or a quarter
    of the machine's memory, whichever is less); an entry larger than ``max_bytes`` by itself
    is used once and not kept (``fine_tune`` does not even compute it: see :meth:`fits`). Low
    cuts are never cached at all (see :func:`split_model`).
    """

    def __init__(self, max_bytes: int | None = None):
        self.max_bytes = int(max_bytes if max_bytes is not None else _default_cache_bytes())
        self._entries: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def fits(self, prefix: keras.Model, n_images: int) -> bool:
        """Whether ``n_images`` features of ``prefix`` (in its compute dtype) fit in ``max_bytes``."""
        itemsize = 2 if "16" in str(prefix.output.dtype) else 4  # bfloat16/float16 features take half
        return itemsize * n_images * int(np.prod(prefix.output.shape[1:])) <= self.max_bytes

    def features(self, prefix: keras.Model, cut_name: str, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        key = (cut_name, tuple(prefix.input_shape), _fingerprint(prefix.get_weights()), _fingerprint([images]))
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        out = batched_call(prefix, images, batch_size)
        if out.nbytes <= self.max_bytes:
            self._entries[key] = out
            while self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return out


_compiled_calls: "weakref.WeakKeyDictionary[keras.Model, object]" = weakref.WeakKeyDictionary()


def batched_call(model: keras.Model, images: np.ndarray, batch_size: int = 64):
    """``model(images)`` in inference mode, batch by batch, as numpy (a dict or list for several outputs).

    A compiled call rather than ``Model.predict``: it works the same under every tf.distribute
    strategy (``predict`` shares ``fit``'s multi-worker bug) and with no strategy at all.
    """
    import tensorflow as tf

    call = _compiled_calls.get(model)
    if call is None:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)
        ref = weakref.ref(model)  # a strong reference here would keep the key (and the model) alive forever
        call = _compiled_calls[model] = tf.function(lambda x: ref()(x, training=False), input_signature=[spec])
    chunks = [call(tf.constant(images[i:i + batch_size], tf.float32)) for i in range(0, len(images), batch_size)]
    if not chunks:
        out = model.output
        spec = out if isinstance(out, dict) else {"": out}
        empty = {k: np.zeros((0, *v.shape[1:]), "float32") for k, v in spec.items()}
        return empty if isinstance(out, dict) else empty[""]
    if isinstance(chunks[0], dict):
        return {k: np.concatenate([np.asarray(c[k]) for c in chunks]) for k in chunks[0]}
    if isinstance(chunks[0], (list, tuple)):
        return [np.concatenate([np.asarray(c[i]) for c in chunks]) for i in range(len(chunks[0]))]
    return np.concatenate([np.asarray(c) for c in chunks])


# ---------------------------------------------------------------- callbacks

class SaveBest(keras.callbacks.Callback):
    """Save the *full* classifier's weights atomically whenever ``monitor`` improves.

    Keras's ModelCheckpoint saves the model being fitted, which with the feature cache is only
    the trainable suffix; this saves the model a user reloads.
    """

    def __init__(self, full_model: keras.Model, path: str, monitor: str = "val_loss"):
        super().__init__()
        self.full_model, self.path, self.monitor = full_model, path, monitor
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            with atomic_path(self.path) as tmp:
                self.full_model.save_weights(tmp)


class SeesClassifier(keras.callbacks.Callback):
    """Gives the callbacks it wraps the full classifier while Keras fits only its trainable
    suffix on cached features (the suffix shares the classifier's layers, so the weights a
    callback reads or saves are the model's). A ``stop_training`` they set reaches the fit.
    """

    HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
             "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")

    def __init__(self, callbacks, classifier: keras.Model):
        super().__init__()
        self.classifier = classifier
        self.inner = keras.callbacks.CallbackList(list(callbacks), model=classifier)

    def set_params(self, params):
        self.inner.set_params(params)

    def set_model(self, model):
        self.fitted = model  # the suffix Keras fits; the wrapped callbacks keep the classifier

    def _forward(self, hook, *args, **kwargs):
        if hook == "on_train_begin":
            self.classifier.stop_training = False
        getattr(self.inner, hook)(*args, **kwargs)
        if getattr(self.classifier, "stop_training", False):
            self.fitted.stop_training = True


for _hook in SeesClassifier.HOOKS:
    setattr(SeesClassifier, _hook, lambda self, *a, _h=_hook, **k: self._forward(_h, *a, **k))


# ---------------------------------------------------------------- one stage

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


def _stage_inputs(model, splits, recipe, stage, k, scaled, strategy, cache):
    """``(fit_model, x_train, x_val, how, at_top)``: cached frozen-prefix features when
    worthwhile, else raw images; ``at_top``: the cached features are the backbone's outputs."""
    with strategy.scope():  # Keras ties a model to the strategy it was created under
        parts = split_model(model, k) if (recipe.cache_features and not recipe.augment and not scaled) else None
    if parts is not None and not cache.fits(parts[0], len(splits.train) + len(splits.val)):
        logger.info("[%s] %s features would not fit the feature cache (%.0f MB): training end to end",
                    stage, parts[2], cache.max_bytes / 2**20)
        parts = None
    if parts is None:
        return model, splits.train.images, splits.val.images, "end to end", False
    prefix, suffix, cut_name = parts
    x_train = cache.features(prefix, cut_name, splits.train.images, recipe.batch_size)
    x_val = cache.features(prefix, cut_name, splits.val.images, recipe.batch_size)
    at_top = cut_name == backbone_of(model).layers[-1].name
    return suffix, x_train, x_val, f"on cached {cut_name} features", at_top


def init_head(model: keras.Model, splits: data_lib.Splits, recipe: Recipe, base_train=None, base_val=None) -> None:
    """Before the head trains: standardise its features with the training images' statistics and,
    for a linear head under ``recipe.linear_probe``, start it at the converged linear probe (LP-FT).

    ``base_train``/``base_val``: the backbone's outputs on the train/val images if already at hand.
    """
    probe_it = recipe.linear_probe and heads.linear_classifier(model) is not None
    if heads.feature_norm(model) is None and not probe_it:
        return
    prefix = prefix_model(model) if base_train is None or (probe_it and base_val is None) else None
    if base_train is None:
        base_train = batched_call(prefix, splits.train.images, recipe.batch_size)
    heads.adapt_feature_norm(model, base_train)
    if not probe_it:
        return
    if base_val is None and len(splits.val):
        base_val = batched_call(prefix, splits.val.images, recipe.batch_size)
    from keras_transfer.probe import fit_linear

    x_val = heads.pooled_features(model, base_val) if base_val is not None else None
    fitted = fit_linear(heads.pooled_features(model, base_train), splits.train.labels, len(splits.class_names),
                        x_val, splits.val.labels if x_val is not None else None, seed=recipe.seed)
    heads.linear_classifier(model).set_weights([fitted.kernel, fitted.bias])


def _callbacks(model, fit_model, recipe, stage, run_dir, resume, has_val, extra):
    monitor = "val_loss" if has_val else "loss"
    cbs = []
    if recipe.patience is not None and has_val:
        cbs.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=recipe.patience,
                                                 restore_best_weights=True))
    if run_dir:
        cbs += [
            keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup", stage), double_checkpoint=True),
            keras.callbacks.CSVLogger(os.path.join(run_dir, f"{stage}.csv"), append=resume),
            SaveBest(model, os.path.join(run_dir, "best.weights.h5"), monitor),
        ]
        if recipe.tensorboard:
            cbs.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard", stage)))
    extra = list(extra or [])
    if extra and fit_model is not model:
        extra = [SeesClassifier(extra, model)]  # the caller's callbacks see the classifier, not the suffix
    return cbs + extra  # after the checkpoints, so they have seen the epoch first


def train_stage(model: keras.Model, splits: data_lib.Splits, recipe: Recipe, stage: str, epochs: int, k: int,
                strategy=None, cache: FeatureCache | None = None, run_dir: str | None = None,
                resume: bool = False, callbacks: list | None = None) -> dict:
    """One stage of the recipe: ``"head"`` (``k`` = every backbone layer) or ``"fine_tune"``.

    Freezes ``[:k]``, standardises the head's features if it is the head stage, compiles the
    model being fitted (the classifier, or its trainable suffix on cached features) with the
    recipe's optimiser, loss and schedule, and fits. Returns the Keras history dict.
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    cache = cache if cache is not None else FeatureCache()
    base = backbone_of(model)
    scaled = freeze_for_stage(model, recipe, stage, k)
    fit_model, x_train, x_val, how, at_top = _stage_inputs(model, splits, recipe, stage, k, scaled, strategy, cache)
    if stage == "head":
        init_head(model, splits, recipe, x_train if at_top else None, x_val if at_top else None)
    logger.info("[%s] %d epoch(s), backbone layers [:%d] of %d frozen%s, training %s", stage, epochs,
                0 if scaled else k, len(base.layers),
                f" (layers [:{k}] at lr x{recipe.transferred_lr_scale})" if scaled else "", how)
    batch = recipe.batch_size * strategy.num_replicas_in_sync
    steps = epochs * max(1, -(-len(x_train) // batch))
    with strategy.scope():
        fit_model.compile(optimizer=recipes.optimizer(recipe, stage, steps, lr_scales(model, recipe, stage, k)),
                          **heads.compile_args(model, recipe.label_smoothing))
    train_ds, val_ds = _stage_datasets(model, fit_model, splits, x_train, x_val, recipe, stage, batch)
    class_weight = data_lib.class_weights(splits.train) if recipe.class_weight else None
    multi_worker = distribute.is_multi_worker(strategy)
    with fit_under_multi_worker(fit_model, next(iter(train_ds))) if multi_worker else contextlib.nullcontext():
        history = fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs, class_weight=class_weight,
                                callbacks=_callbacks(model, fit_model, recipe, stage, run_dir, resume,
                                                     val_ds is not None, callbacks),
                                verbose=recipe.verbose, shuffle=False)
    return history.history


def _stage_datasets(model, fit_model, splits, x_train, x_val, recipe, stage, batch):
    """``(train_ds, val_ds)`` of ``x_train``/``x_val`` (images or cached features); ``val_ds`` None without a val split."""
    seed = recipe.seed + (0 if stage == "head" else 1)
    augment = data_lib.augmentation(recipe.seed) if (recipe.augment and fit_model is model) else None
    train_ds = data_lib.to_dataset(x_train, heads.targets(model, splits.train.labels), batch, shuffle=True,
                                   seed=seed, augment=augment)
    if not len(splits.val):
        return train_ds, None
    return train_ds, data_lib.to_dataset(x_val, heads.targets(model, splits.val.labels), batch)


# ---------------------------------------------------------------- the recipe

def _stage_val_loss(history: dict, recipe: Recipe) -> float | None:
    """The val_loss of the weights a stage ended with (the best epoch if early stopping restored it)."""
    losses = history.get("val_loss")
    if not losses:
        return None
    return float(min(losses) if recipe.patience is not None else losses[-1])


class _StageState:
    """Which stages of a run are finished (``run_dir/STATE_FILE``) and the head stage's val_loss."""

    def __init__(self, run_dir: str | None, resume: bool):
        self.run_dir = run_dir
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)
        self.values = read_json(os.path.join(run_dir, STATE_FILE), {}) if (run_dir and resume) else {}

    def _weights(self, stage: str) -> str:
        return os.path.join(self.run_dir, f"{stage}.weights.h5")

    def load_finished(self, model: keras.Model, stage: str) -> bool:
        """Load a stage an earlier run finished; False if it still has to run."""
        if not (self.run_dir and self.values.get(stage) == "done" and os.path.exists(self._weights(stage))):
            return False
        model.load_weights(self._weights(stage))
        logger.info("[%s] already finished in %s: loaded its weights", stage, self.run_dir)
        return True

    def finish(self, model: keras.Model, stage: str) -> None:
        if self.run_dir:
            with atomic_path(self._weights(stage)) as tmp:
                model.save_weights(tmp)
            self.values[stage] = "done"
            write_json(os.path.join(self.run_dir, STATE_FILE), self.values)


def _keep_best(model, stage: str, history: dict, recipe: Recipe, state: _StageState, before) -> None:
    """Record the head stage's val_loss; after fine-tuning, go back to the head's weights (``before``)
    if fine-tuning never beat it (``recipe.keep_best``)."""
    val_loss = _stage_val_loss(history, recipe)
    if stage == "head" and val_loss is not None:
        state.values["head_val_loss"] = val_loss
    if before is not None and val_loss is not None and val_loss > state.values.get("head_val_loss", np.inf):
        model.set_weights(before)
        logger.info("[fine_tune] best val_loss %.4f > the head stage's %.4f: kept the head stage's weights",
                    val_loss, state.values["head_val_loss"])
        history["kept_head_weights"] = True


def stages(model: keras.Model, recipe: Recipe) -> list[tuple[str, int, int]]:
    """``[(stage, epochs, k frozen backbone layers)]``: the head on a frozen backbone, then fine-tuning."""
    return [("head", recipe.head_epochs, len(backbone_of(model).layers)),
            ("fine_tune", recipe.fine_tune_epochs, resolve_frozen(model, recipe.frozen))]


def fine_tune(model: keras.Model, splits: data_lib.Splits, recipe: Recipe | None = None, run_dir: str | None = None,
              strategy=None, resume: bool = False, cache: FeatureCache | None = None,
              callbacks: list | None = None) -> dict:
    """Train ``model`` on ``splits`` with the two-stage recipe (:func:`train_stage` per stage);
    returns ``{stage: history}``.

    ``model``: a classifier from :mod:`keras_transfer.heads`, built inside ``strategy.scope()``;
    ``recipe``: default ``recipes.recipe("default")``; ``run_dir``: where checkpoints, CSV logs and
    the stage state go (None: nothing on disk); ``resume``: finished stages are loaded and the
    interrupted one restarts from its last epoch; ``cache``: a shared :class:`FeatureCache`.
    """
    recipe = recipe or Recipe()
    cache = cache if cache is not None else FeatureCache()
    keras.utils.set_random_seed(recipe.seed)
    if recipe.class_weight and heads.is_multi_output(model):
        raise ValueError("class_weight does not apply to the binary_auxiliary head (two outputs). "
                         "Received: class_weight=True")
    state, histories = _StageState(run_dir, resume), {}
    for stage, epochs, k in stages(model, recipe):
        if state.load_finished(model, stage) or epochs <= 0:
            continue
        before = model.get_weights() if (stage == "fine_tune" and recipe.keep_best) else None
        histories[stage] = train_stage(model, splits, recipe, stage, epochs, k, strategy, cache, run_dir, resume,
                                       callbacks)
        _keep_best(model, stage, histories[stage], recipe, state, before)
        state.finish(model, stage)
    return histories


# ---------------------------------------------------------------- evaluation

def predict_classes(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities ``(N, n)`` for uint8/float images ``(N, H, W, 3)``."""
    return np.asarray(heads.class_probabilities(model, batched_call(model, images, batch_size)))


def evaluate(model: keras.Model, split: data_lib.ImageSet, batch_size: int = 64) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix on ``split``."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    probs = predict_classes(model, split.images, batch_size)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, int)
    labels = list(range(len(split.class_names)))
    p, r, f, s = precision_recall_fscore_support(split.labels, pred, labels=labels, zero_division=0)
    return {
        "images": int(len(split)),
        "accuracy": float(np.mean(pred == split.labels)) if len(split) else float("nan"),
        "majority_class_rate": float(np.bincount(split.labels).max() / len(split)) if len(split) else float("nan"),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, name in enumerate(split.class_names)},
        "confusion_matrix": confusion_matrix(split.labels, pred, labels=labels).tolist(),
        "class_names": list(split.class_names),
    }




def weights_fingerprint(model: keras.Model) -> str:
    """A short hash of every weight: equal on every worker of a correct multi-worker run."""
    return _fingerprint(model.get_weights())[:16]
