"""The front door: a :class:`Learner` holds the model, the data, the recipe and everything a
stage needs, so that each step of transfer learning is one call; ``keras-transfer train`` is
this, with a run folder around it. ``learner.model`` stays a plain ``keras.Model``: fit it,
save it, export it as you would any."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os

import keras
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import export as export_lib
from keras_transfer import plots, training
from keras_transfer._utils import choices
from keras_transfer._utils.atomic_files import atomic_path, write_json
from keras_transfer.export.heatmaps import grad_cam, overlay
from keras_transfer.models.backbones import check_drop_path
from keras_transfer.models.surgery import backbone_of, resolve_frozen
from keras_transfer.training import cut_probe, precision, recipes
from keras_transfer.training.lr_finder import RateFinding, find_learning_rate

logger = logging.getLogger(__name__)

LEARNER_FILE = "learner.json"


class Learner:
    """A classifier on a pretrained backbone, with its data and recipe.

    Args:
        data: :class:`~keras_transfer.data.Splits` (from :func:`load_data`), or
            :class:`~keras_transfer.data.Streams`.
        backbone: a row of the backbone table (``kt.list_backbones()``).
        weights: ``"imagenet"``, ``"hed"`` (VGG16, offline), a weights file or None.
        removed: units removed from the top of the backbone, or ``"auto"`` (the default, as
            ``keras-transfer train``): the cut the probe recommends on the training images
            (``learner.probe`` holds its table).
        head: ``"gap_dense"`` (the default), ``"binary_auxiliary"`` or ``"ordinal_auxiliary"``
            (with ``binary_weight``; ordinal: classes listed from least to most of one quantity) or
            ``"keep_classifier"`` (with ``include_top=True``).
        recipe: ``"default"``, ``"tutorial"``, ``"keras_io"`` or a :class:`~keras_transfer.training.Recipe`;
            ``recipe_fields`` set its fields: ``frozen``, ``head_epochs``, ``fine_tune_epochs``,
            ``head_learning_rate``, ``fine_tune_learning_rate``, ``patience`` (None: no early
            stopping), ``augment``... (see ``Recipe``).
        run_dir: where checkpoints and per-epoch CSV logs go (None: nowhere).
        strategy: a ``tf.distribute`` strategy (default: the current one).
        precision: ``"auto"`` (as ``keras-transfer train``: bfloat16 where this CPU runs it fast,
            float16 on GPUs), ``"float32"``, ``"bfloat16"``, ``"float16"``, or None (Keras's
            global policy as it is).
        binary_weight: the auxiliary heads' loss weight B (their second output's share of the loss;
            None: 0.4); refused with a head of one output.
        cache: a :class:`~keras_transfer.training.FeatureCache` shared with other learners on the
            same images (frozen-prefix features computed once for all).

    ```python
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=10, progress=False)
    >>> learner = kt.Learner(splits, "vgg16", weights="hed", head_epochs=1, fine_tune_epochs=1, verbose=0)
    >>> learner.removed == learner.probe["recommended_removed"]      # removed="auto": the probe's cut
    True
    >>> histories = learner.fine_tune()                               # the head, then fine-tuning
    >>> sorted(histories), 0.0 <= learner.evaluate()["accuracy"] <= 1.0
    (['fine_tune', 'head'], True)
    >>> learner.predict(splits.test.images[:2]).shape                 # class probabilities
    (2, 10)

    ```
    """

    def __init__(self, data, backbone: str = "vgg16", weights="imagenet", removed: int | str = "auto",
                 head: str = "gap_dense", include_top: bool = False, recipe: str | recipes.Recipe = "default",
                 run_dir: str | None = None, strategy=None, precision: str | None = "auto",
                 binary_weight: float | None = None, cache: training.FeatureCache | None = None, **recipe_fields):
        self._hold(data, backbone, weights, head, include_top, run_dir, strategy, precision, cache,
                   recipes.recipe(recipe, **recipe_fields) if isinstance(recipe, str)
                   else dataclasses.replace(recipe, **recipe_fields))
        self.recipe.views()  # a view count the kind cannot give is refused here, before any work
        if recipe_fields.get("patience") is not None and not data.has_val:
            raise ValueError("patience stops training when the validation loss stops improving, and this data has "
                             "no validation images. Leave patience out (or pass patience=None), or split off "
                             f"validation images. Received: patience={recipe_fields['patience']}")
        choices.check_mixup([head], self.recipe.mixup)  # before the probe: nothing runs that would be refused
        choices.check_binary_weight(head, binary_weight)
        check_drop_path(backbone, self.recipe.drop_path)
        if removed != "auto" and (isinstance(removed, bool) or not isinstance(removed, int) or removed < 0):
            raise ValueError(f"removed is a number of units to remove (0 or more) or 'auto'. Received: removed={removed!r}")
        if removed == "auto":
            self.probe = cut_probe.recommend_for(backbone, weights, data, self.recipe.seed, self.recipe.batch_size,
                                                 strategy)
            removed = self.probe["recommended_removed"]
            logger.info("removed auto: the probe (on %d training images) recommends removing %d unit(s): the model "
                        "ends at %s", self.probe["images"], removed, self.probe["recommended_layer"])
        self.removed = int(removed)
        options = self.recipe.head_options()
        if binary_weight is not None:
            options.update(binary_weight=binary_weight)
        if head == "binary_auxiliary":  # its random partition of the classes is drawn from the seed
            options.update(seed=self.recipe.seed)
        keras.utils.set_random_seed(self.recipe.seed)
        with self._computing(log=True):
            self.model = training.build_model(backbone, data.num_classes, weights=weights,
                                              input_size=data.image_size[0], removed=self.removed, head=head,
                                              include_top=include_top, strategy=strategy,
                                              drop_path=self.recipe.drop_path, **options)

    def _hold(self, data, backbone, weights, head, include_top, run_dir, strategy, precision, cache, recipe,
              histories=None) -> None:
        """What a learner holds besides its model and cut, set alike when it is built and when it is loaded."""
        self.data, self.backbone, self.weights, self.run_dir = data, backbone, weights, run_dir
        self.head, self.include_top, self.strategy, self.precision = head, include_top, strategy, precision
        self.recipe, self.histories, self.probe = recipe, histories or {}, None
        self.cache = cache if cache is not None else training.FeatureCache()
        self._twin = None  # the float32 twin served() scores with, when the model computes in another precision

    def _computing(self, log: bool = False):
        """The Keras dtype policy of ``precision`` while models are built and trained (restored
        after); ``log``: say which (once, when the model is built)."""
        if self.precision is None:
            return contextlib.nullcontext()
        return precision.using(self.precision, backbone=self.backbone, log=log)

    # ---- what it holds -----------------------------------------------------------------------

    @property
    def base(self) -> keras.Model:
        """The backbone inside ``model`` (after the cut)."""
        return backbone_of(self.model)

    @property
    def frozen(self) -> int:
        """Backbone layers ``[:frozen]`` fine-tuning freezes (the recipe's ``frozen``, resolved)."""
        return resolve_frozen(self.model, self.recipe.frozen)

    @property
    def class_names(self) -> list[str]:
        """The classes, in the order of the probabilities ``predict`` returns."""
        return list(self.data.class_names)

    # ---- training ----------------------------------------------------------------------------

    def fit_head(self, epochs: int | None = None) -> dict:
        """Train the head alone on the frozen backbone (``epochs``: default the recipe's
        ``head_epochs``); returns its Keras history."""
        with self._computing():
            stage = training.Stage(self.model, self.data, self.recipe, "head",
                                   self.recipe.head_epochs if epochs is None else epochs,
                                   len(self.base.layers), self.strategy, self.cache)
            self.histories["head"] = stage.fit(stage.plan(), run_dir=self.run_dir)
        return self.histories["head"]

    def fine_tune(self, resume: bool = False, callbacks: list | None = None) -> dict:
        """Both stages of the recipe: the head on the frozen backbone, then the top layers
        unfrozen (:func:`~keras_transfer.training.fine_tune`: the better stage is kept). Returns
        ``{"head": history, "fine_tune": history}``. ``resume``: continue the stages ``run_dir``
        records."""
        with self._computing():
            self.histories = training.fine_tune(self.model, self.data, self.recipe, run_dir=self.run_dir,
                                                strategy=self.strategy, resume=resume, cache=self.cache,
                                                callbacks=callbacks)
        return self.histories

    def lr_find(self, stage: str = "head", apply: bool = False, **sweep) -> RateFinding:
        """The learning-rate range test on ``stage`` (``"head"`` or ``"fine_tune"``), as fastai's
        ``lr_find``: ``.suggestion`` (fastai's ``valley``) and ``.plot()``. The model's weights
        are left as they were; ``apply=True`` sets the stage's rate in the recipe to the
        suggestion. ``sweep``: ``start``, ``end``, ``steps``."""
        with self._computing():
            found = find_learning_rate(self.model, self.data, self.recipe, stage, self.strategy, self.cache, **sweep)
        logger.info("lr_find (%s stage): suggested learning rate %.2e", stage, found.suggestion)
        if apply:
            self.recipe = dataclasses.replace(self.recipe, **{f"{stage}_learning_rate": found.suggestion})
        return found

    # ---- what it gives -------------------------------------------------------------------------

    def served(self) -> keras.Model:
        """The model as it is exported and scored: in float32 whatever precision trained it (a
        float32 model itself; else its float32 twin, built once and given the current weights)."""
        if self._twin is None or self._twin[0] is not self.model:
            self._twin = (self.model, precision.as_float32(self.model))
        elif self._twin[1] is not self.model:
            self._twin[1].set_weights(self.model.get_weights())
        return self._twin[1]

    def evaluate(self, part: str = "test") -> dict:
        """Accuracy, per-class scores and the confusion matrix of the served model on the ``"test"``
        (or ``"val"``, ``"train"``) images."""
        return training.evaluate(self.served(), self._part(part), strategy=self.strategy)

    def predict(self, images) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of uint8 images ``(N, H, W, 3)`` (any size: resized
        as training resized), or of image files and folders (a path or a list of them)."""
        images = data_lib.as_images(images, self.data.image_size)
        return training.predict_classes(self.served(), images, strategy=self.strategy)

    def mistakes(self, part: str = "test", max_images: int = 16) -> list[dict]:
        """The misclassified images of ``part``, most confident first (:func:`keras_transfer.plots.mistakes`)."""
        images = self._part(part)
        return plots.mistakes(images.labels, self.predict(images.images), self.class_names, max_images, images.paths)

    # ---- figures -----------------------------------------------------------------------------

    def plot_curves(self, path: str | None = None):
        """Loss and accuracy per epoch of the stages trained, one after another."""
        return plots.training_curves(list(self.histories.items()), path)

    def plot_examples(self, part: str = "train", per_class: int = 6, path: str | None = None):
        """The first ``per_class`` images of each class in ``part``."""
        images = self._part(part)
        return plots.examples(images.images, images.labels, self.class_names, per_class, path)

    def plot_probe(self, path: str | None = None):
        """Where to cut: the probe's scores (LogME, linear-probe accuracy) against units removed,
        the recommended cut marked (``removed="auto"`` only)."""
        if self.probe is None:
            raise ValueError(f"this learner was built with removed={self.removed}, not 'auto': it ran no probe.")
        return cut_probe.plot(self.probe, path)

    def plot_predictions(self, part: str = "test", count: int = 8, path: str | None = None):
        """The first ``count`` images of ``part``, each titled with the prediction (red: wrong)."""
        images = self._part(part)
        picked = images.images[:count]
        return plots.predictions(picked, images.labels[:count], self.predict(picked), self.class_names, path)

    def plot_confusion(self, part: str = "test", path: str | None = None):
        """The confusion matrix of the served model on ``part``."""
        return plots.confusion_matrix(self.evaluate(part)["confusion_matrix"], self.class_names, path,
                                      title=f"{part} confusion matrix")

    def plot_mistakes(self, part: str = "test", max_images: int = 16, path: str | None = None):
        """The images of ``part`` the model gets wrong, the most confident mistakes first."""
        images = self._part(part)
        return plots.misclassified(images.images, images.labels, self.predict(images.images), self.class_names,
                                   path, max_images, images.paths)

    def plot_grad_cam(self, images=None, path: str | None = None, count: int = 4):
        """Grad-CAM heatmaps of the predicted class over ``images`` (default: the first ``count``
        test images, the mistakes first, each titled with its true class too)."""
        truth = None
        if images is None:
            test = self._part("test")
            picks = list(dict.fromkeys([m["index"] for m in self.mistakes("test")] + list(range(len(test)))))[:count]
            images, truth = test.images[picks], [self.class_names[int(test.labels[i])] for i in picks]
        images = np.asarray(images)
        heat, probabilities = (np.asarray(t) for t in grad_cam(self.served(), images))
        titles = [f"{self.class_names[int(p.argmax())]} ({p.max():.2f})" for p in probabilities]
        if truth is not None:
            titles = [f"true {t}\npredicted {title}" for t, title in zip(truth, titles)]
        return plots.grad_cams([overlay(i, h) for i, h in zip(images, heat)], titles, path)

    # ---- shipping and keeping ------------------------------------------------------------------

    def export(self, out_dir: str, formats=("saved_model",), info: dict | None = None) -> str:
        """The next version ``out_dir/N`` of a float32 SavedModel that serves raw images (and
        ``model.tflite`` with ``formats=("saved_model", "tflite")``); reload it with
        :class:`~keras_transfer.export.Predictor` or plain ``tf.saved_model.load``."""
        return export_lib.export(self.served(), out_dir, self.class_names,
                                 {"backbone": self.backbone, "removed": self.removed, **(info or {})}, formats)

    def save(self, path: str) -> str:
        """``path/model.keras`` (the model, trainable further) and ``path/learner.json`` (what it
        was built from, its recipe and histories): :func:`load_learner` reads them back."""
        os.makedirs(path, exist_ok=True)
        with atomic_path(os.path.join(path, "model.keras")) as tmp:
            self.model.save(tmp)
        write_json(os.path.join(path, LEARNER_FILE), {
            "backbone": self.backbone, "weights": None if self.weights is None else str(self.weights),
            "removed": self.removed, "head": self.head, "include_top": self.include_top,
            "precision": self.precision, "recipe": dataclasses.asdict(self.recipe), "class_names": self.class_names,
            "image_size": list(self.data.image_size), "histories": self.histories})
        return path

    def _part(self, part: str):
        if part not in ("train", "val", "test"):
            raise ValueError(f"part must be 'train', 'val' or 'test'. Received: part={part!r}")
        return getattr(self.data, part)


def load_data(data_dir: str | None = None, dataset: str | None = None, image_size: int = 224,
              validation_split: float = 0.15, test_split: float = 0.15, seed: int = 0,
              limit_per_class: int | None = None, in_memory: str = "auto", progress: bool = True):
    """Images split into train, validation and test, stratified and seeded, as ``keras-transfer
    train`` splits them: ``data_dir`` (a folder with one sub-folder of images per class; unreadable
    files are skipped and listed in ``.skipped``) or ``dataset`` (a built-in set: ``digits``,
    ``fashion_mnist``, ``elpv``... or ``tfds:NAME``). ``in_memory``: ``"yes"``, ``"no"`` (stream from
    the files) or ``"auto"``.

    ```python
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=10, progress=False)
    >>> splits.class_names[:3], len(splits.train) + len(splits.val) + len(splits.test)
    (['0', '1', '2'], 100)

    ```
    """
    return data_lib.load(data_dir, dataset, image_size, validation_split, test_split, seed, limit_per_class,
                         progress=progress, in_memory=in_memory)


class _NoImages:
    """The data of a learner loaded without any: its classes and input size, no images."""

    def __init__(self, class_names, image_size):
        self.class_names, self.image_size, self.num_classes = list(class_names), image_size, len(class_names)

    def __getattr__(self, name):
        raise AttributeError(f"this learner was loaded without data, so it has no {name!r}; pass data= to "
                             f"load_learner (e.g. kt.load_data(...)) to evaluate or train it.")


def load_learner(path: str, data=None) -> Learner:
    """A :class:`Learner` saved with :meth:`Learner.save`, its model and recipe as they were.
    ``data``: splits to evaluate or train further on (default: none; ``predict`` and ``export``
    need none).

    ```python
    >>> import tempfile
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=5, progress=False)
    >>> learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, head_epochs=1, fine_tune_epochs=0,
    ...                      verbose=0)
    >>> _ = learner.fine_tune()
    >>> again = kt.load_learner(learner.save(tempfile.mkdtemp()))
    >>> bool(abs(again.predict(splits.test.images) - learner.predict(splits.test.images)).max() < 1e-6)
    True

    ```
    """
    with open(os.path.join(path, LEARNER_FILE)) as f:
        saved = json.load(f)
    learner = Learner.__new__(Learner)  # not built: its model is read back
    learner._hold(data if data is not None else _NoImages(saved["class_names"], tuple(saved["image_size"])),
                  saved["backbone"], saved["weights"], saved["head"], saved["include_top"], None, None,
                  saved["precision"], None, recipes.Recipe(**saved["recipe"]), saved["histories"])
    learner.removed = saved["removed"]
    learner.model = training.load_model(os.path.join(path, "model.keras"),
                                        advice=f"Save the learner again, or restore {path} from a copy.")
    return learner
