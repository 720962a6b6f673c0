"""Export a classifier for serving, reload it, predict with it.

Layout (TF-Serving style, one folder per version, newest wins)::

    out_dir/
      1/                      <- a SavedModel (saved_model.pb, variables/), float32
        labels.json           <- class names, input size, backbone
        model.tflite          <- with formats=("saved_model", "tflite"): serving_default for TFLite
      2/ ...

Every version computes in float32, whatever precision trained the model (its weights, float32
variables under any mixed policy, are copied into a float32 twin): a bfloat16 graph would be
emulated, slowly, on CPUs without bf16 and is not convertible to TensorFlow Lite. The Keras
model itself (for further training) is the run folder's ``model.keras``, not stored again here.

Signatures, each returning ``probabilities`` (N, n) float32, ``class_ids`` (N,) int64 and
``class_names`` (N,) string:

- ``serving_default`` (= ``serve``): ``images`` uint8 ``[N, H, W, 3]`` RGB of any H, W; resized
  inside to the model's input size by the resize training used (:mod:`keras_transfer.data.images`).
- ``explain``: as ``serving_default``, plus ``heatmaps`` (N, h, w) float32 in [0, 1]: Grad-CAM of
  the predicted class at the last feature map (:mod:`keras_transfer.export.heatmaps`).
- ``serve_bytes``: ``images`` string ``[N]``, each an encoded JPEG/PNG/BMP/GIF file, decoded in
  the graph to the pixels training decoded (:func:`keras_transfer.data.images.decode_bytes`: EXIF
  orientation, transparency on white, 16-bit); a GIF with a transparent colour, bytes that are
  no image and images above ``images.MAX_PIXELS`` are refused with an error.

A version is written into a hidden temporary folder and renamed into place, so a failed
export leaves every earlier version intact and a server never sees half a model; the next
export removes the temporary folders of exports that were killed. Version
folders are readable by everyone (a TF Serving process may run as another user).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile

import keras
import tensorflow as tf

from keras_transfer._utils.atomic_files import (
    remove_stale_temporaries,
    sync_folder,
    sync_tree,
    temporary_prefix,
)
from keras_transfer.data import images as images_lib
from keras_transfer.export import heatmaps
from keras_transfer.models import heads
from keras_transfer.training.precision import as_float32

logger = logging.getLogger(__name__)

LABELS_FILE = "labels.json"
TFLITE_FILE = "model.tflite"
FORMATS = ("saved_model", "tflite")


def versions(out_dir: str) -> list[int]:
    """The version numbers exported under ``out_dir`` (its numbered folders), ascending."""
    if not os.path.isdir(out_dir):
        return []
    return sorted(int(d) for d in os.listdir(out_dir) if re.fullmatch(r"\d+", d) and os.path.isdir(os.path.join(out_dir, d)))


def _serving_functions(model: keras.Model, class_names):
    size = tuple(model.input_shape[1:3])
    names = tf.constant(list(class_names))

    def classify(pixels):
        probabilities = heads.class_probabilities(model, model(pixels, training=False))
        probabilities = tf.cast(probabilities, tf.float32)
        ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": ids, "class_names": tf.gather(names, ids)}

    def serve(images):
        return classify(images_lib.resize(images, size))  # the resize training used

    def decode_one(encoded):
        return images_lib.resize(images_lib.decode_bytes(encoded), size)  # decode_file's pixels

    def serve_bytes(images):
        return classify(tf.map_fn(decode_one, images, fn_output_signature=tf.TensorSpec((*size, 3), tf.float32)))

    split = heatmaps.feature_split(model)  # built here, outside the traced function

    def explain_images(images):
        maps, probabilities = heatmaps.grad_cam(model, images_lib.resize(images, size), split=split)
        ids = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "class_ids": ids, "class_names": tf.gather(names, ids),
                "heatmaps": maps}

    return serve, serve_bytes, explain_images


def _check_formats(formats) -> tuple[str, ...]:
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or "saved_model" not in formats:
        raise ValueError(f"formats must include 'saved_model' and may add 'tflite'. Received: formats={formats!r}")
    return formats


def to_tflite(saved_model_dir: str, path: str) -> str:
    """Convert the SavedModel's ``serving_default`` (uint8 images of any size in, probabilities
    out, resize included) with TensorFlow Lite's builtin ops; returns ``path``."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_default"])
    with open(path, "wb") as f:
        f.write(converter.convert())
    return path


def export(model: keras.Model, out_dir: str, class_names, metadata: dict | None = None,
           formats=("saved_model",)) -> str:
    """Write the next version of ``model`` under ``out_dir``; returns the version folder.

    Args:
        model: a classifier taking raw RGB ``(N, H, W, 3)`` (any head of this package), in any precision.
        out_dir: the model's folder; existing versions are kept, the new one is max + 1.
        class_names: the name of each output class, in order.
        metadata: extra JSON-able facts stored in ``labels.json`` (backbone, metrics...).
        formats: ``("saved_model",)``, or ``("saved_model", "tflite")`` to add ``model.tflite``.
    """

    formats = _check_formats(formats)
    class_names = [str(c) for c in class_names]
    n_out = model.output["class"].shape[-1] if heads.is_multi_output(model) else model.output.shape[-1]
    if len(class_names) != n_out:
        raise ValueError(f"{len(class_names)} class names for a model with {n_out} outputs. "
                         f"Received: class_names={class_names!r}")
    os.makedirs(out_dir, exist_ok=True)
    version = (versions(out_dir) or [0])[-1] + 1
    final = os.path.join(out_dir, str(version))
    remove_stale_temporaries(out_dir)
    tmp = tempfile.mkdtemp(prefix=f"{temporary_prefix()}{version}-", dir=out_dir)
    try:
        _write_saved_model(as_float32(model), class_names, tmp)
        if "tflite" in formats:
            to_tflite(tmp, os.path.join(tmp, TFLITE_FILE))
        info = {"class_names": class_names, "input_size": list(model.input_shape[1:3]), "version": version,
                "formats": list(formats), **(metadata or {})}
        with open(os.path.join(tmp, LABELS_FILE), "w") as f:
            json.dump(info, f, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private to this user
        sync_tree(tmp)  # on disk before its name: a power cut leaves no version of zeros
        os.rename(tmp, final)
        sync_folder(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_saved_model(served: keras.Model, class_names: list[str], folder: str) -> None:
    """The SavedModel of ``served`` with its four signatures, written to ``folder``."""
    serve, serve_bytes, explain_images = _serving_functions(served, class_names)
    pixels = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")
    archive = keras.export.ExportArchive()
    # the first endpoint added also becomes serving_default
    archive.add_endpoint("serve", serve, input_signature=[pixels])
    archive.add_endpoint("serve_bytes", serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("explain", explain_images, input_signature=[pixels])
    tf_logger = logging.getLogger("tensorflow")  # its INFO "Assets written to" names a temporary folder
    level = tf_logger.level
    tf_logger.setLevel(max(level, logging.WARNING))
    try:
        archive.write_out(folder, verbose=False)
    finally:
        tf_logger.setLevel(level)


def resolve(path: str) -> str:
    """A version folder: ``path`` itself if it holds a SavedModel, else its newest version, else
    (a run or search folder) the newest version of its ``export/``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist: give a run folder, its export/ folder or one version of it. "
                                f"Received: {path}")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"{path!r} is a file, not an export folder: give a run folder, its export/ folder or "
                                 f"one version of it. Received: {path}")
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    numbers = versions(path)
    if not numbers and versions(os.path.join(path, "export")):
        return resolve(os.path.join(path, "export"))
    if not numbers:
        raise FileNotFoundError(f"{path!r} holds no exported model (no saved_model.pb, no numbered version folder, no "
                                "export/ folder). Export one with `keras-transfer export RUN_DIR`.")
    return os.path.join(path, str(numbers[-1]))
