"""An export reloaded: :class:`Predictor` classifies arrays and files as the SavedModel serves them.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_transfer._utils.atomic_files import read_json
from keras_transfer.data import images as images_lib
from keras_transfer.data.augmentation import Views
from keras_transfer.data.streaming import skip_reason
from keras_transfer.export.saved_model import LABELS_FILE, resolve, versions

logger = logging.getLogger(__name__)


class Predictor:
    """A reloaded export: call its signatures without this package's model code.

    ```python
    >>> import tempfile
    >>> splits = kt.load_data(dataset="digits", image_size=32, limit_per_class=5, progress=False)
    >>> learner = kt.Learner(splits, "vgg16", weights="hed", removed=3, head_epochs=1, fine_tune_epochs=0, verbose=0)
    >>> _ = learner.fine_tune()
    >>> served = kt.Predictor(learner.export(tempfile.mkdtemp()))
    >>> answers = served.predict_images(splits.test.images)
    >>> bool(abs(answers["probabilities"] - learner.predict(splits.test.images)).max() < 1e-4)
    True

    ```
    """

    def __init__(self, path: str):
        self.path = resolve(path)
        try:
            self.saved_model = tf.saved_model.load(self.path)
        except Exception as err:  # noqa: BLE001 - whatever TensorFlow raises, the export is unusable
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            base = os.path.dirname(self.path)
            older = [os.path.join(base, str(v)) for v in versions(base) if str(v) != os.path.basename(self.path)]
            raise ValueError(f"{self.path} is not a complete SavedModel ({type(err).__name__}: {reason}): it was "
                             "damaged or copied only in part. Copy it again" + (
                                 f", or use the version before it ({older[-1]})" if older else "")
                             + f". Received: {self.path}") from None
        self.info = read_json(os.path.join(self.path, LABELS_FILE))
        if self.info is None:
            raise FileNotFoundError(f"{self.path} has no {LABELS_FILE}: it was not written by keras-transfer "
                                    f"export, or copied only in part. Received: {self.path}")
        self.class_names = self.info["class_names"]

    def predict_images(self, images, tta: bool = False) -> dict:
        """``images``: uint8 array ``[N, H, W, 3]`` (RGB, 0..255, any H and W). ``tta``: the
        probabilities averaged over the augmented views the model trained on (test-time
        augmentation), each view taken of the image at the model's input size."""
        images = self._checked(images)
        serve = self.saved_model.signatures["serving_default"]
        if not tta:
            return {k: v.numpy() for k, v in serve(images=images).items()}
        views = self.views()
        resized = images_lib.resize_array(images, self.info["input_size"]).astype("float32")
        probabilities = np.mean([serve(images=np.asarray(views.apply(resized, v)).round().astype("uint8"))
                                 ["probabilities"].numpy() for v in range(views.count)], axis=0)
        ids = probabilities.argmax(axis=-1)
        return {"probabilities": probabilities, "class_ids": ids,
                "class_names": np.array([self.class_names[i].encode() for i in ids], dtype=object)}

    def predict_tflite(self, images) -> np.ndarray:
        """Class probabilities from the version's ``model.tflite`` (``export(..., formats=("saved_model",
        "tflite"))``), image by image as a phone would run it: what to check it against
        :meth:`predict_images`."""
        path = os.path.join(self.path, "model.tflite")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{self.path} has no model.tflite; export with formats=('saved_model', 'tflite'). "
                                    f"Received: {self.path}")
        with warnings.catch_warnings():  # tf.lite.Interpreter's notice that LiteRT will replace it
            warnings.simplefilter("ignore", UserWarning)
            runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
        return np.concatenate([runner(images=image[None])["probabilities"] for image in self._checked(images)])

    def views(self):
        """The :class:`~keras_transfer.data.augmentation.Views` the model trained on; an error if it trained on none."""
        if "views" not in self.info:
            raise ValueError(f"{self.path} was trained without augmented views, so there are none to average: "
                             "test-time augmentation needs a model trained with `train --augment`. Received: tta=True")
        return Views(**self.info["views"])

    @staticmethod
    def _checked(images) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 RGB in 0..255, got dtype {images.dtype}; "
                            "convert with np.clip(x, 0, 255).astype('uint8') if they are in that range.")
        if images.ndim != 4 or images.shape[-1] != 3:
            hint = " (one image? add a batch axis: images[None])" if images.ndim == 3 else ""
            raise ValueError(f"images must have shape [N, H, W, 3], got {list(images.shape)}{hint}.")
        if 0 in images.shape[1:3]:
            raise ValueError(f"images have a height or width of 0 pixels: nothing to classify. Received: images of shape "
                             f"{list(images.shape)}")
        return images

    def explain_images(self, images) -> dict:
        """:meth:`predict_images` plus ``heatmaps`` (N, h, w): Grad-CAM of each predicted class."""
        if "explain" not in self.saved_model.signatures:
            raise ValueError(f"{self.path} has no 'explain' signature: it was exported before Grad-CAM was part of "
                             "an export. Export it again with `keras-transfer export RUN_DIR`.")
        images = self._checked(images)
        out = self.saved_model.signatures["explain"](images=images)
        return {k: v.numpy() for k, v in out.items()}

    def predict_files(self, paths, tta: bool = False) -> tuple[list[dict], list[tuple[str, str]]]:
        """Classify image files; returns (results, skipped) where skipped lists (path, reason).

        Files are decoded as training decoded them (:func:`keras_transfer.data.images.decode_file`:
        EXIF orientation, every colour mode) and sent to ``serving_default``, which resizes
        them as training did: the answers are the trained model's.
        """
        if tta:
            self.views()  # refused before any file is read
        results, skipped = [], []
        for path in paths:
            try:
                pixels = images_lib.decode_file(path)
            except Exception as err:  # noqa: BLE001 - an unreadable file is reported, not fatal
                skipped.append((path, skip_reason(err)))
                continue
            probs = self.predict_images(pixels[None], tta)["probabilities"][0]
            i = int(np.argmax(probs))
            results.append({"path": path, "class": self.class_names[i], "probability": float(probs[i]),
                            "probabilities": {c: float(p) for c, p in zip(self.class_names, probs)}})
        return results, skipped


def predict(path: str, image_paths) -> list[dict]:
    """Classify image files with the export at ``path``; unreadable files raise nothing, they
    are logged as warnings and left out."""
    results, skipped = Predictor(path).predict_files(image_paths)
    for p, reason in skipped:
        logger.warning("skipped %s: %s", p, reason)
    return results
