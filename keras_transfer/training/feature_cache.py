"""The frozen-prefix feature cache: a frozen prefix's output never changes, so it is computed
once and only the rest of the network trains on it."""

from __future__ import annotations

import collections
import hashlib
import os

import keras
import numpy as np

from keras_transfer.data.image_sets import ImageSet, stratified_index
from keras_transfer.data.streaming import DiskFeatures, FileImages
from keras_transfer.models.surgery import backbone_of, cut_points, layer_index, multiply_adds
from keras_transfer.training import distribute
from keras_transfer.training._disk_cache import DiskCache
from keras_transfer.training.batched_inference import batched_call

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



# the cut name of pooled features (see split_model): "<layer>+gap"
POOLED = "+gap"


def split_model(model: keras.Model, k: int):
    """``(prefix, suffix, cut_name)`` for a classifier whose backbone layers ``[:k]`` are frozen.

    ``prefix``: raw images -> the output of the last cut point below ``k`` (all frozen);
    ``suffix``: those features -> the model's outputs, sharing every layer with ``model``.
    When the whole backbone is frozen and the head begins with global average pooling (it has no
    weights), the prefix pools too and its features are ``(1, 1, C)``: C floats an image instead
    of the ``h x w x C`` map (cut name ``<layer>+gap``).
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
    head = model.get_layer("head")
    if c == len(base.layers) - 1 and _pools_first(head):
        channels = int(cut.output.shape[-1])
        features = keras.Input((1, 1, channels), name="features")
        after_pooling = keras.Model(head.layers[1].output, head.output, name="head_after_pooling")
        suffix = keras.Model(features, after_pooling(keras.layers.Reshape((channels,))(features)), name="suffix")
        return prefix_model(model, cut.name + POOLED), suffix, cut.name + POOLED
    prefix = prefix_model(model, cut.name)
    features = keras.Input(tuple(cut.output.shape[1:]), name="features")
    x = features
    if c < len(base.layers) - 1:
        x = keras.Model(cut.output, base.output, name=f"{base.name}_suffix")(features)
    suffix = keras.Model(features, head(x), name="suffix")
    return prefix, suffix, cut.name


def _pools_first(head: keras.Model) -> bool:
    """Whether the head's first step is a global average pooling (weightless) and the only layer
    that uses its input (ops outside its layers, such as the cast a mixed policy adds, aside)."""
    if len(head.layers) < 2 or not isinstance(head.layers[1], keras.layers.GlobalAveragePooling2D):
        return False
    users = [node.operation for node in head.layers[0]._outbound_nodes if node.operation in head.layers]
    return users == [head.layers[1]]


def prefix_model(model: keras.Model, cut_name: str | None = None) -> keras.Model:
    """Raw images -> the backbone's output at ``cut_name`` (default: its top), sharing weights;
    ``<layer>+gap``: its global average, ``(1, 1, C)``."""
    base = backbone_of(model)
    layer_name, pooled = (cut_name[:-len(POOLED)], True) if cut_name and cut_name.endswith(POOLED) else (cut_name, False)
    cut = base.get_layer(layer_name) if layer_name else base.layers[-1]
    images = keras.Input(tuple(model.input_shape[1:]), name="images")
    frozen_part = keras.Model(base.inputs, cut.output, name=f"{base.name}_prefix")
    x = frozen_part(model.get_layer("preprocess")(images))
    if pooled:
        x = _pooling()(x)
    return keras.Model(images, x, name="prefix")


def _pooling():
    # in float32 whatever the policy: the head's statistics and its linear-probe start are computed
    # from these means, as they were from the whole maps in float64 (bfloat16 would round each to 3 digits)
    return keras.layers.GlobalAveragePooling2D(keepdims=True, dtype="float32", name="pooled")


def saved_fraction(model: keras.Model, c: int) -> float:
    """Share of a training step's multiply-adds saved by not running backbone layers ``[:c + 1]``."""
    base = backbone_of(model)
    prefix = multiply_adds(base.layers[:c + 1])
    rest = multiply_adds(base.layers[c + 1:]) + multiply_adds([model.get_layer("head")])
    return prefix / max(prefix + 3 * rest, 1)


def feature_bytes(prefix: keras.Model, n_images: int = 1) -> int:
    """Bytes of ``n_images`` of ``prefix``'s outputs in its compute dtype (bfloat16/float16: half of float32)."""
    itemsize = 2 if "16" in str(prefix.output.dtype) else 4
    return itemsize * n_images * int(np.prod(prefix.output.shape[1:]))


def _fingerprint(arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype)).encode())
        h.update(a.data)
    return h.hexdigest()


def _frozen_part(prefix: keras.Model) -> keras.Model | None:
    """The backbone sub-model inside a :func:`prefix_model` (None for another kind of prefix)."""
    return next((layer for layer in prefix.layers if isinstance(layer, keras.Model) and layer.name.endswith("_prefix")),
                None)


class _Entry:
    """Features at one cut, with what is needed to extend them to a deeper cut."""

    def __init__(self, features: np.ndarray, cut_name: str, layer_hashes: tuple[str, ...]):
        self.features, self.cut_name, self.layer_hashes = features, cut_name, layer_hashes


class FeatureCache:
    """Frozen-prefix outputs, shared by every run or trial with the same prefix and images.

    Key: (the prefix's cut layer, its input shape and compute dtype, a hash of its weights, a
    hash of the images). So two trials with the same backbone, weights, input size and frozen
    prefix compute features once, and a different prefix (or precision) can never be served
    stale features. A deeper cut is computed from the deepest shallower cut already cached for
    the same images and the same weights below it, running only the layers in between: a
    search over frozen depths, or a recipe whose head stage caches the top after fine-tuning
    cached a lower cut, pays for one pass through the backbone, not one per cut.

    It also carries a :class:`HeadMemo` (``heads``): trials that start the head stage from the
    same weights, data and recipe train it once.

    Rule for what is kept: least recently used entries are evicted once the total passes
    ``max_bytes`` (default: 4 GiB or a quarter of the machine's memory, whichever is less). An
    entry larger than ``max_bytes`` by itself, and every entry of images streamed from files,
    goes to the :class:`~keras_transfer.training._disk_cache.DiskCache` (``disk``; shared by
    every process that uses its directory, resumable, least recently used evicted past its own
    cap); with ``disk=False`` such an entry is used once and not kept. Low cuts are never cached
    at all (see :func:`split_model`).
    """

    def __init__(self, max_bytes: int | None = None, disk: DiskCache | bool = True):
        self.max_bytes = int(max_bytes if max_bytes is not None else _default_cache_bytes())
        self._disk = disk  # True: the default DiskCache, made when first needed; False: none
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0
        self.extended = 0  # misses served from a shallower cached cut
        self.heads = HeadMemo()  # the same trials also share trained heads

    @property
    def nbytes(self) -> int:
        return sum(e.features.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.heads = HeadMemo(self.heads.max_entries)

    @property
    def disk(self) -> DiskCache | None:
        """Where features that do not fit in ``max_bytes`` (or whose images are files) are kept."""
        if self._disk is True:
            self._disk = DiskCache()
        return self._disk or None

    def accepts(self, images) -> bool:
        """Whether features of ``images`` can be kept: arrays always, files where there is a disk
        cache, streams (None) never."""
        return images is not None and (not isinstance(images, FileImages) or self.disk is not None)

    @staticmethod
    def on_disk(features) -> bool:
        """Whether ``features`` (from :meth:`features`; a list of them, one per view) are kept on disk."""
        return isinstance(features[0] if isinstance(features, list) else features, DiskFeatures)

    def fits(self, prefix: keras.Model, n_images: int, images=None) -> bool:
        """Whether ``n_images`` features of ``prefix`` fit in ``max_bytes`` (in its compute dtype)
        or, else or for files (``images`` of :class:`FileImages`), on disk (in float32)."""
        if not isinstance(images, FileImages) and feature_bytes(prefix, n_images) <= self.max_bytes:
            return True
        return self.disk is not None and self.disk.fits(4 * n_images * int(np.prod(prefix.output.shape[1:])))

    def features(self, prefix: keras.Model, cut_name: str, images: np.ndarray, batch_size: int = 32,
                 views=None, view: int = 0, strategy=None):
        """``prefix``'s output on ``images`` (on their view number ``view`` of ``views``, if given):
        an array, or :class:`~keras_transfer.data.streaming.DiskFeatures` for files (:class:`FileImages`)
        and for features larger than ``max_bytes``. Under a multi-worker ``strategy`` each worker
        computes those of its share of the images and the workers exchange them (see :meth:`_on_disk`)."""
        layer_hashes = tuple(_fingerprint([w]) for w in prefix.get_weights())
        streamed = isinstance(images, FileImages)
        images_key = (tuple(prefix.input_shape), str(prefix.output.dtype),
                      images.digest() if streamed else _fingerprint([images]),
                      f"{views.key}/{view}" if views is not None else "")
        key = (cut_name, images_key, hashlib.sha1("".join(layer_hashes).encode()).hexdigest())
        transform = (lambda x: views.apply(x, view)) if views is not None else None
        if len(images) and self.disk is not None and (streamed or feature_bytes(prefix, len(images)) > self.max_bytes):
            shared = strategy if strategy is not None and distribute.is_multi_worker(strategy) else None
            return self._on_disk(key, prefix, images, batch_size, transform, shared)
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key].features
        self.misses += 1
        out = self._extend(prefix, cut_name, images_key, layer_hashes, batch_size)
        if out is None:
            out = batched_call(prefix, images, batch_size, transform)
        if out.nbytes <= self.max_bytes:
            self._entries[key] = _Entry(out, cut_name, layer_hashes)
            while self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)
        return out

    def _on_disk(self, key, prefix, images, batch_size, transform, strategy=None) -> DiskFeatures:
        """The entry of ``key`` in the disk cache. Under a multi-worker ``strategy`` each worker keeps
        its own entry (its name ends with the task's index) and computes, chunk by chunk, the
        features of its share of the images (every W-th), then the workers gather every share:
        each decodes 1/W of the files, and all hold the same features. An entry is read only if
        every worker has it (else all compute it again together: a collective skipped by one
        would leave the others waiting)."""
        shape = tuple(prefix.output.shape[1:])
        workers, index = distribute.input_share(strategy)

        def compute(positions):
            if not isinstance(images, FileImages):
                return batched_call(prefix, images[positions], batch_size, transform), np.ones(len(positions), bool)
            out, ok = np.zeros((len(positions), *shape), "float32"), np.zeros(len(positions), bool)
            for rows, batch in images.take(positions).batches(batch_size):
                out[rows], ok[rows] = batched_call(prefix, batch, batch_size, transform), True
            return out, ok

        def chunk(start, stop):
            if strategy is None:
                return compute(np.arange(start, stop))
            mine = np.arange(start + index, stop, workers)
            features, ok = compute(mine)
            where = distribute.all_gather_rows(strategy, mine) - start
            out, all_ok = np.zeros((stop - start, *shape), "float32"), np.zeros(stop - start, bool)
            out[where] = distribute.all_gather_rows(strategy, np.asarray(features, "float32"))
            all_ok[where] = distribute.all_gather_rows(strategy, ok)
            return out, all_ok

        name = hashlib.sha1(repr(key).encode()).hexdigest() + (f"-task{index}" if strategy is not None else "")
        found = self.disk.get(name)
        if strategy is not None and not distribute.all_gather_rows(strategy, np.array([found is not None])).all():
            found = None
        self.hits += found is not None
        self.misses += found is None
        return found if found is not None else self.disk.features(name, len(images), chunk, fresh=strategy is not None)

    def _extend(self, prefix, cut_name, images_key, layer_hashes, batch_size) -> np.ndarray | None:
        """Features at ``cut_name`` from the deepest cached shallower cut of the same images and
        weights (its weights are a strict prefix of this prefix's); None if there is none."""
        frozen = _frozen_part(prefix)
        if frozen is None:
            return None
        names = {layer.name for layer in frozen.layers}
        below = [(k, e) for k, e in self._entries.items()
                 if k[1] == images_key and e.cut_name in names and e.cut_name != cut_name
                 and len(e.layer_hashes) < len(layer_hashes) and layer_hashes[:len(e.layer_hashes)] == e.layer_hashes]
        if not below:
            return None
        key, entry = max(below, key=lambda ke: len(ke[1].layer_hashes))
        self._entries.move_to_end(key)
        pooled = cut_name.endswith(POOLED)
        top = frozen.get_layer(cut_name[:-len(POOLED)] if pooled else cut_name).output
        if pooled:
            top = _pooling()(top)
        bridge = keras.Model(frozen.get_layer(entry.cut_name).output, top)
        self.extended += 1
        return batched_call(bridge, entry.features, batch_size)


class HeadMemo:
    """Trained heads, by everything the head stage's result depends on (see ``stage.head_key``).

    The head stage trains only the head on a frozen backbone, from a seeded start: trials of a
    search that differ only in what fine-tuning does (frozen depth, its rate) would train the
    same head again. Here the first one's head weights and history are kept (the ``max_entries``
    most recently used) and the others reuse them.
    """

    def __init__(self, max_entries: int = 64):
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[list, dict]] = collections.OrderedDict()
        self.hits = 0

    def get(self, key: str):
        """``(head weights, history)`` trained before under ``key``, or None."""
        if key not in self._entries:
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        weights, history = self._entries[key]
        return [w.copy() for w in weights], {k: list(v) for k, v in history.items()}

    def keep(self, key: str, weights: list, history: dict) -> None:
        self._entries[key] = ([np.array(w) for w in weights], {k: list(v) for k, v in history.items()})
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


# ---------------------------------------------------------------- the head's start

# images of each part a streamed set's head starts from: pooled features of 4096 images estimate
# each feature's mean and variance to about 1.6 % of its standard deviation
HEAD_INIT_SAMPLE = 4096


def head_start_features(model: keras.Model, splits, recipe, base_train=None, base_val=None, with_val: bool = True):
    """``(x_train, y_train, groups, x_val, y_val)``: the backbone features (and labels) a head's
    feature statistics and linear probe start from, whatever holds them; ``groups[i]`` is the image
    training row ``i`` comes from (the rows of several views are view after view).

    ``base_train``/``base_val``: the backbone's outputs already at hand (arrays, features on disk,
    or for ``base_train`` a list, one per augmented view: the head then starts from every view it
    will train on, since a probe of view 0 alone is over-confident on the others). Features on disk
    give a stratified sample of at most :data:`HEAD_INIT_SAMPLE` of their rows, pooled; files a
    sample of as many images (:meth:`~keras_transfer.data.image_sets.Splits.for_statistics`).
    ``x_val`` and ``y_val`` are None where not needed (``with_val`` false).
    """
    if base_train is not None and FeatureCache.on_disk(base_train):
        each = [_disk_sample(d, splits.train.labels, recipe.seed)  # cached on disk: a sample of their rows
                for d in (base_train if isinstance(base_train, list) else [base_train])]
        x_train, y_train, groups = (np.concatenate(parts) for parts in zip(*each))
        x_val, y_val = (_disk_sample(base_val, splits.val.labels, recipe.seed)[:2] if FeatureCache.on_disk(base_val)
                        else (base_val, splits.val.labels))
        return x_train, y_train, groups, x_val, y_val
    splits = splits.for_statistics(HEAD_INIT_SAMPLE, recipe.seed)
    views = recipe.views()
    prefix = prefix_model(model) if base_train is None or (with_val and base_val is None) else None
    if base_train is None and views is not None and isinstance(splits.train, ImageSet):
        each = [_features(prefix, splits.train, recipe.batch_size, views, v) for v in range(views.count)]
        x_train, y_train = (np.concatenate(parts) for parts in zip(*each))
        groups = _images_of_rows(len(y_train), len(each[0][1]))
    elif base_train is None:
        x_train, y_train = _features(prefix, splits.train, recipe.batch_size)
        groups = _images_of_rows(len(y_train), len(y_train))
    elif isinstance(base_train, list):  # pooled first: 1x1 maps of every view, not V copies of the maps
        x_train = np.concatenate([_pooled_maps(b) for b in base_train])
        y_train = np.tile(splits.train.labels, len(x_train) // len(splits.train))
        groups = _images_of_rows(len(y_train), len(splits.train))
    else:
        x_train, y_train = base_train, splits.train.labels
        groups = _images_of_rows(len(y_train), len(y_train))
    if not with_val:
        return x_train, y_train, groups, None, None
    if base_val is None:
        return (x_train, y_train, groups, *_features(prefix, splits.val, recipe.batch_size))
    return x_train, y_train, groups, base_val, splits.val.labels


def _images_of_rows(rows: int, images: int) -> np.ndarray:
    """The image each of ``rows`` training rows comes from, the rows being ``images`` rows a view, view after view."""
    return np.arange(rows) % max(images, 1)


def _disk_sample(features: DiskFeatures, labels: np.ndarray, seed: int):
    """``(pooled (n, 1, 1, C) maps, labels, images)`` of a stratified sample of at most
    :data:`HEAD_INIT_SAMPLE` of the images whose features are on disk (those that were read)."""
    readable = np.flatnonzero(features.ok)
    rows = readable[stratified_index(labels[readable], HEAD_INIT_SAMPLE, seed)]
    return _pooled_maps(features.rows(rows)), labels[rows], rows


def _pooled_maps(features: np.ndarray) -> np.ndarray:
    """``(N, h, w, C)`` maps as ``(N, 1, 1, C)``: their global average, still a map for the head's helpers."""
    return np.asarray(features, "float32").mean(axis=(1, 2), keepdims=True)


def _features(prefix, part, batch_size: int, views=None, view: int = 0):
    """``(backbone features, labels)`` of an ImageSet (of its view ``view`` of ``views``, if
    given) or a stream of ``(image, label)``; None: no data. Pooled to ``(N, 1, 1, C)`` maps for
    views and for files (their maps may not fit in memory; a file unreadable now is left out)."""
    if part is None or (isinstance(part, ImageSet) and not len(part)):
        return None, np.zeros(0, int)
    transform = (lambda x: views.apply(x, view)) if views is not None else None
    if isinstance(part, ImageSet) and part.streamed:
        chunks = [(_pooled_maps(batched_call(prefix, images, batch_size, transform)), part.labels[positions])
                  for positions, images in part.images.batches(batch_size)]
    elif isinstance(part, ImageSet):
        out = batched_call(prefix, part.images, batch_size, transform)
        return (out if views is None else _pooled_maps(out)), part.labels
    else:
        chunks = [(batched_call(prefix, np.asarray(x), batch_size), np.asarray(y)) for x, y in part.batch(batch_size)]
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
