"""The front door (issue 36, first cut): a learner holds the model, the data, the recipe and
everything a stage needs, so that each step of the tutorial is one call.

    >>> import keras_transfer as kt
    >>> splits = kt.data.load(dataset="digits", image_size=32, limit=10, progress=False)
    >>> learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, head_epochs=1, fine_tune_epochs=1, verbose=0)
    >>> histories = learner.fine_tune()
    >>> 0.0 <= learner.evaluate()["accuracy"] <= 1.0
    True

``learner.model`` stays a plain ``keras.Model``: fit it, save it, export it as you would any.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np

from keras_transfer import data as data_lib
from keras_transfer import export as export_lib
from keras_transfer import training
from keras_transfer.models.surgery import backbone_of, resolve_frozen
from keras_transfer.training import cut_probe, precision, recipes

logger = logging.getLogger(__name__)


class Learner:
    """A classifier on a pretrained backbone, with its data and recipe.

    Args:
        splits: :class:`~keras_transfer.data.Splits` (``kt.data.load``) or
            :class:`~keras_transfer.data.Streams`.
        backbone: a row of the backbone table (``kt.list_backbones()``).
        weights: ``"imagenet"``, ``"hed"`` (VGG16, offline), a weights file or None.
        removed: units removed from the top, or ``"auto"``: the cut the probe recommends on the
            training images, as ``keras-transfer train`` does.
        recipe: ``"default"``, ``"tutorial"``, ``"keras_io"`` or a :class:`~keras_transfer.training.Recipe`;
            ``overrides`` set its fields (``patience=None``: no early stopping).
        run_dir: where checkpoints and CSV logs go (None: nowhere).
        strategy: a tf.distribute strategy (default: the current one).
    """

    def __init__(self, splits, backbone: str, weights="imagenet", removed: int | str = "auto",
                 recipe: str | training.Recipe = "default", run_dir: str | None = None, strategy=None, **overrides):
        self.splits, self.backbone, self.weights, self.run_dir = splits, backbone, weights, run_dir
        self.recipe = (recipes.recipe(recipe, **overrides) if isinstance(recipe, str)
                       else dataclasses.replace(recipe, **overrides))
        self.strategy = strategy
        self.cache = training.FeatureCache()
        self.probe = None
        if removed == "auto":
            self.probe = cut_probe.recommend_for(backbone, weights, splits, self.recipe.seed, self.recipe.batch_size,
                                                 strategy)
            removed = self.probe["recommended_removed"]
            logger.info("removed auto: the probe recommends removing %d unit(s) (ends at %s)", removed,
                        self.probe["recommended_layer"])
        self.removed = int(removed)
        keras.utils.set_random_seed(self.recipe.seed)
        self.model = training.build_model(backbone, splits.num_classes, weights=weights,
                                          input_size=splits.image_size[0], removed=self.removed, strategy=strategy,
                                          **self.recipe.head_options())
        self.histories: dict[str, dict] = {}

    @property
    def frozen(self) -> int:
        """Backbone layers ``[:frozen]`` fine-tuning freezes (the recipe's ``frozen``, resolved)."""
        return resolve_frozen(self.model, self.recipe.frozen)

    def fit_head(self, epochs: int | None = None) -> dict:
        """Train the head alone, the backbone frozen; returns its history."""
        stage = training.Stage(self.model, self.splits, self.recipe, "head",
                               self.recipe.head_epochs if epochs is None else epochs,
                               len(backbone_of(self.model).layers), self.strategy, self.cache)
        self.histories["head"] = stage.fit(stage.plan(), run_dir=self.run_dir)
        return self.histories["head"]

    def fine_tune(self) -> dict:
        """Both stages of the recipe, the head then fine-tuning (:func:`~keras_transfer.training.fine_tune`);
        returns ``{"head": history, "fine_tune": history}``."""
        self.histories = training.fine_tune(self.model, self.splits, self.recipe, run_dir=self.run_dir,
                                            strategy=self.strategy, cache=self.cache)
        return self.histories

    def evaluate(self, part: str = "test") -> dict:
        """Accuracy, per-class scores and the confusion matrix of the model as served (float32) on
        the ``"test"`` (or ``"val"``) images."""
        return training.evaluate(precision.as_float32(self.model), getattr(self.splits, part))

    def predict(self, images) -> np.ndarray:
        """Class probabilities of uint8 images ``(N, H, W, 3)`` (any size: resized as training
        resized), or of image files and folders (a path or a list of them)."""
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, (list, tuple)) and images
                                                         and isinstance(images[0], (str, os.PathLike))):
            images = _read_images(images, self.splits.image_size)
        return training.predict_classes(precision.as_float32(self.model), images)

    def export(self, out_dir: str, formats=("saved_model",)) -> str:
        """The next version of a float32 SavedModel (and TFLite) under ``out_dir`` that serves raw images."""
        return export_lib.export(precision.as_float32(self.model), out_dir, self.splits.class_names,
                                 {"backbone": self.backbone, "removed": self.removed}, formats)


def _read_images(paths, size) -> np.ndarray:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(root, f) for root, _, names in os.walk(p) for f in names
                            if f.lower().endswith(data_lib.IMAGE_EXTENSIONS))
        else:
            files.append(str(p))
    return np.stack([data_lib.read_image(f, size) for f in files])
