"""The fine-tuning recipe of the seed tutorial, made repeatable, resumable and fast.

Stage 1 trains the head with the whole backbone frozen (RMSprop); stage 2 freezes the first
``k`` backbone layers, unfreezes the rest and trains with SGD(lr=1e-4, momentum=0.9).

When the first layers are frozen and no augmentation runs before them, their output never
changes, so it is computed once (:class:`FeatureCache`) and only the rest of the network is
trained on it: same result, a fraction of the time. Models are built and compiled inside the
tf.distribute strategy's scope (see :mod:`keras_transfer.distribute`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import weakref

import keras
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import distribute, heads
from keras_transfer.backbones import build_base
from keras_transfer.files import atomic_path, read_json, write_json
from keras_transfer.surgery import backbone_of, chop, cut_points, freeze, layer_index, multiply_adds, units

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
        raise ValueError(f"--frozen {frozen} is out of range: {base.name} has {len(base.layers)} layers "
                         f"(use 0..{len(base.layers)}, 'all' or a layer name).")
    return int(frozen)


# ---------------------------------------------------------------- recipe

@dataclasses.dataclass
class Recipe:
    """What :func:`fine_tune` does; the defaults are the seed tutorial's."""

    head_epochs: int = 5
    fine_tune_epochs: int = 5
    frozen: int | str | None = None  # stage 2 freezes backbone layers [:frozen]; None: all but the top 2 units
    head_optimizer: str = "rmsprop"
    head_learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    momentum: float = 0.9
    # Borthakur & Einhorn (seed 004): instead of freezing layers [:frozen] in stage 2, train
    # them at fine_tune_learning_rate * transferred_lr_scale.
    transferred_lr_scale: float | None = None
    batch_size: int = 32
    augment: bool = False
    cache_features: bool = True
    patience: int | None = 3  # early stopping on val_loss; None disables it
    class_weight: bool = False
    seed: int = 0
    tensorboard: bool = False
    verbose: int | str = "auto"


@keras.saving.register_keras_serializable(package="keras_transfer")
class ScaledSGD(keras.optimizers.SGD):
    """SGD whose gradients for some variables are scaled by ``scale``.

    With plain SGD and momentum the update is linear in the gradient, so this is exactly a
    learning rate of ``learning_rate * scale`` for those variables (the transferred layers).
    """

    def __init__(self, scaled_paths=(), scale: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.scaled_paths = list(scaled_paths)
        self.scale = float(scale)
        self._scaled = set(self.scaled_paths)

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        grads = [g * self.scale if g is not None and v.path in self._scaled else g
                 for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def get_config(self):
        return {**super().get_config(), "scaled_paths": self.scaled_paths, "scale": self.scale}


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
    images = keras.Input(tuple(model.input_shape[1:]), name="images")
    frozen_part = keras.Model(base.inputs, cut.output, name=f"{base.name}_prefix")
    prefix = keras.Model(images, frozen_part(model.get_layer("preprocess")(images)), name="prefix")
    features = keras.Input(tuple(cut.output.shape[1:]), name="features")
    x = features
    if c < len(base.layers) - 1:
        x = keras.Model(cut.output, base.output, name=f"{base.name}_suffix")(features)
    suffix = keras.Model(features, model.get_layer("head")(x), name="suffix")
    return prefix, suffix, cut.name


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
        """Whether ``n_images`` features of ``prefix`` (float32) fit in ``max_bytes``."""
        return 4 * n_images * int(np.prod(prefix.output.shape[1:])) <= self.max_bytes

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
    """``model(images)`` in inference mode, batch by batch, as numpy (a dict for dict outputs).

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
    return np.concatenate([np.asarray(c) for c in chunks])


def fit_multi_worker(fit_model: keras.Model, full_model: keras.Model, train_ds, val_ds, epochs: int, strategy,
                     csv_path: str | None = None) -> dict:
    """A plain training loop for ``MultiWorkerMirroredStrategy``: ``strategy.run`` per replica,
    gradients all-reduced by the optimizer, ``strategy.reduce(SUM, axis=None)`` for the loss.

    Uses the loss, weights and optimizer ``fit_model`` was compiled with. Every worker runs it;
    the weights stay identical because every update is the same all-reduced gradient.
    """
    import tensorflow as tf

    args = heads.compile_args(full_model)
    losses = args["loss"] if isinstance(args["loss"], dict) else {"": args["loss"]}
    weights = args.get("loss_weights") or {k: 1.0 for k in losses}
    loss_fns = {k: keras.losses.get({"class_name": v, "config": {"reduction": None}}) for k, v in losses.items()}
    optimizer = fit_model.optimizer

    def total_loss(y, pred):
        y = y if isinstance(y, dict) else {"": y}
        pred = pred if isinstance(pred, dict) else {"": pred}
        per_example = sum(weights[k] * tf.cast(tf.reshape(loss_fns[k](y[k], pred[k]), [-1]), tf.float32) for k in loss_fns)
        return per_example

    def class_part(y, pred):
        return (y["class"], pred["class"]) if isinstance(pred, dict) else (y, pred)

    @tf.function
    def train_step(batch):
        x, y = batch[0], batch[1]

        def replica(x, y):
            with tf.GradientTape() as tape:
                pred = fit_model(x, training=True)
                per_example = total_loss(y, pred)
                loss = tf.nn.compute_average_loss(per_example)
            grads = tape.gradient(loss, fit_model.trainable_variables)
            optimizer.apply(grads, fit_model.trainable_variables)
            yc, pc = class_part(y, pred)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(yc, tf.int64), tf.argmax(pc, axis=-1)), tf.float32))
            return tf.reduce_sum(per_example), correct, tf.cast(tf.shape(per_example)[0], tf.float32)

        sums = strategy.run(replica, args=(x, y))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    @tf.function
    def eval_step(batch):
        x, y = batch[0], batch[1]

        def replica(x, y):
            pred = fit_model(x, training=False)
            per_example = total_loss(y, pred)
            yc, pc = class_part(y, pred)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.cast(yc, tf.int64), tf.argmax(pc, axis=-1)), tf.float32))
            return tf.reduce_sum(per_example), correct, tf.cast(tf.shape(per_example)[0], tf.float32)

        sums = strategy.run(replica, args=(x, y))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

    def run_epoch(step, dataset):
        totals = np.zeros(3)
        for batch in strategy.experimental_distribute_dataset(dataset):
            totals += [float(v) for v in step(batch)]
        return totals[0] / max(totals[2], 1), totals[1] / max(totals[2], 1)

    history: dict[str, list] = collections.defaultdict(list)
    for epoch in range(epochs):
        loss, acc = run_epoch(train_step, train_ds)
        history["loss"].append(loss)
        history["accuracy"].append(acc)
        line = f"epoch {epoch + 1}/{epochs} - loss {loss:.4f} - accuracy {acc:.4f}"
        if val_ds is not None:
            val_loss, val_acc = run_epoch(eval_step, val_ds)
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(val_acc)
            line += f" - val_loss {val_loss:.4f} - val_accuracy {val_acc:.4f}"
        print(line, flush=True)
    if csv_path:
        import csv

        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", *history])
            writer.writerows([i, *(history[k][i] for k in history)] for i in range(epochs))
    return dict(history)


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


# ---------------------------------------------------------------- the recipe

def _stage_optimizer(recipe: Recipe, stage: str, model: keras.Model, k: int):
    if stage == "head":
        return keras.optimizers.get({"class_name": recipe.head_optimizer,
                                     "config": {"learning_rate": recipe.head_learning_rate}})
    if recipe.transferred_lr_scale is not None:
        base = backbone_of(model)
        paths = [v.path for layer in base.layers[:k] for v in layer.trainable_weights]
        return ScaledSGD(paths, recipe.transferred_lr_scale,
                         learning_rate=recipe.fine_tune_learning_rate, momentum=recipe.momentum)
    return keras.optimizers.SGD(learning_rate=recipe.fine_tune_learning_rate, momentum=recipe.momentum)


def fine_tune(model: keras.Model, splits: data_lib.Splits, recipe: Recipe | None = None, run_dir: str | None = None,
              strategy=None, resume: bool = False, cache: FeatureCache | None = None,
              callbacks: list | None = None) -> dict:
    """Train ``model`` on ``splits`` with the two-stage recipe; returns ``{stage: history}``.

    Args:
        model: a classifier from :mod:`keras_transfer.heads`, built inside ``strategy.scope()``.
        splits: train/val(/test) images from :mod:`keras_transfer.data`.
        recipe: epochs, optimizers, frozen layers, batch size, augmentation...
        run_dir: where checkpoints (``backup/``, ``best.weights.h5``), CSV logs and the stage
            state go; ``None`` keeps nothing on disk.
        resume: continue a killed run from ``run_dir``: finished stages are loaded, the
            interrupted one restarts from its last epoch (Keras ``BackupAndRestore``).
        cache: a :class:`FeatureCache` to share frozen-prefix features (tuning trials do).
    """
    import tensorflow as tf

    recipe = recipe or Recipe()
    strategy = strategy or tf.distribute.get_strategy()
    cache = cache if cache is not None else FeatureCache()
    keras.utils.set_random_seed(recipe.seed)
    base = backbone_of(model)
    k_fine = resolve_frozen(model, recipe.frozen)
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
    state = read_json(os.path.join(run_dir, STATE_FILE), {}) if (run_dir and resume) else {}
    histories: dict[str, dict] = {}
    stages = [("head", recipe.head_epochs, len(base.layers)), ("fine_tune", recipe.fine_tune_epochs, k_fine)]
    has_val = len(splits.val) > 0
    monitor = "val_loss" if has_val else "loss"
    if recipe.class_weight and heads.is_multi_output(model):
        raise ValueError("--class-weight does not apply to the binary_auxiliary head (two outputs).")
    class_weight = data_lib.class_weights(splits.train) if recipe.class_weight else None

    for stage_index, (stage, epochs, k) in enumerate(stages):
        weights_path = os.path.join(run_dir, f"{stage}.weights.h5") if run_dir else None
        if state.get(stage) == "done" and weights_path and os.path.exists(weights_path):
            model.load_weights(weights_path)
            print(f"[{stage}] already finished in {run_dir}: loaded its weights")
            continue
        if epochs <= 0:
            continue
        scaled = stage == "fine_tune" and recipe.transferred_lr_scale is not None
        freeze(model, 0 if scaled else k)
        with strategy.scope():  # Keras ties a model to the strategy it was created under
            parts = split_model(model, k) if (recipe.cache_features and not recipe.augment and not scaled) else None
        if parts is not None and not cache.fits(parts[0], len(splits.train) + len(splits.val)):
            print(f"[{stage}] {parts[2]} features would not fit the feature cache "
                  f"({cache.max_bytes / 2**20:.0f} MB): training end to end")
            parts = None
        if parts is None:
            fit_model, x_train, x_val = model, splits.train.images, splits.val.images
            how = "end to end"
        else:
            prefix, fit_model, cut_name = parts
            x_train = cache.features(prefix, cut_name, splits.train.images, recipe.batch_size)
            x_val = cache.features(prefix, cut_name, splits.val.images, recipe.batch_size)
            how = f"on cached {cut_name} features"
        frozen_now = 0 if scaled else k
        print(f"[{stage}] {epochs} epoch(s), backbone layers [:{frozen_now}] of {len(base.layers)} frozen"
              + (f" (layers [:{k}] at lr x{recipe.transferred_lr_scale})" if scaled else "") + f", training {how}")
        with strategy.scope():
            fit_model.compile(optimizer=_stage_optimizer(recipe, stage, model, k), **heads.compile_args(model))
        n_replicas = strategy.num_replicas_in_sync
        batch = recipe.batch_size * n_replicas
        augment = data_lib.augmentation(recipe.seed) if (recipe.augment and parts is None) else None
        train_ds = data_lib.to_dataset(x_train, heads.targets(model, splits.train.labels), batch, shuffle=True,
                                       seed=recipe.seed + stage_index, augment=augment)
        val_ds = data_lib.to_dataset(x_val, heads.targets(model, splits.val.labels), batch) if has_val else None
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
        cbs += list(callbacks or [])  # after the checkpoints, so they have seen the epoch first
        if distribute.is_multi_worker(strategy):
            # Keras 3.15's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585)
            histories[stage] = fit_multi_worker(fit_model, model, train_ds, val_ds, epochs, strategy,
                                                os.path.join(run_dir, f"{stage}.csv") if run_dir else None)
        else:
            history = fit_model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=cbs,
                                    class_weight=class_weight, verbose=recipe.verbose, shuffle=False)
            histories[stage] = history.history
        if run_dir:
            with atomic_path(weights_path) as tmp:
                model.save_weights(tmp)
            state[stage] = "done"
            write_json(os.path.join(run_dir, STATE_FILE), state)
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
