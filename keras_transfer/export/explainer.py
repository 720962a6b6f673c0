"""Grad-CAM for a run's model or an export, on image files: overlays written as PNGs.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from keras_transfer import plots
from keras_transfer._utils.atomic_files import read_json
from keras_transfer.data.images import decode_file, resize_array
from keras_transfer.data.streaming import skip_reason
from keras_transfer.export.heatmaps import feature_split, grad_cam, overlay
from keras_transfer.export.predictor import Predictor
from keras_transfer.training.model import load_model
from keras_transfer.training.precision import as_float32

logger = logging.getLogger(__name__)


class Explainer:
    """Grad-CAM of image files with an export (its ``explain`` signature) or a ``.keras`` classifier
    that takes RGB pixels (a run's ``model.keras``, or a flat model with its preprocessing inside)."""

    def __init__(self, path: str):
        self.path = path
        if path.endswith(".keras"):
            # in float32 like the export's explain signature, whatever precision it trained in
            self.model = as_float32(load_model(path, advice="Use the run's export instead, or train it again."))
            self.split = feature_split(self.model)
            self.size = tuple(self.model.input_shape[1:3])
            out = self.model.output
            n = (out["class"] if isinstance(out, dict) else out).shape[-1]
            self.class_names = _run_class_names(os.path.dirname(path), n) or [f"class {i}" for i in range(n)]
        else:
            self.model, self.predictor = None, Predictor(path)
            self.class_names = self.predictor.class_names

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (n,), heatmap (h, w))`` of one uint8 image of any size."""
        if self.model is None:
            out = self.predictor.explain_images(pixels[None])
            return out["probabilities"][0], out["heatmaps"][0]

        heat, probs = grad_cam(self.model, resize_array(pixels, self.size)[None], split=self.split)
        return np.asarray(probs)[0], np.asarray(heat)[0]


def _run_class_names(run_dir: str, n: int):
    names = (read_json(os.path.join(run_dir, "metrics.json"), {}) or {}).get("class_names")
    return names if names and len(names) == n else None


def explain_files(source: str, paths, out_dir: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Write ``OUT_DIR/<name>.gradcam.png`` (the image beside its Grad-CAM overlay) for each file;
    returns one row per file (path, class, probability, figure) and the (path, reason) skipped.
    An existing figure is never overwritten: the new one gets a number."""
    explainer = Explainer(source)
    os.makedirs(out_dir, exist_ok=True)
    rows, skipped = [], []
    for path in paths:
        try:
            pixels = decode_file(path)
        except Exception as err:  # noqa: BLE001 - an unreadable file is reported, not fatal
            skipped.append((path, skip_reason(err)))
            continue
        probs, heat = explainer(pixels)
        i = int(np.argmax(probs))
        figure = _free_name(out_dir, os.path.splitext(os.path.basename(path))[0] + ".gradcam", ".png")
        plots.grad_cam_figure(pixels, overlay(pixels, heat), f"{explainer.class_names[i]} ({probs[i]:.2f})", figure)
        logger.debug("%s: %s %.3f -> %s", path, explainer.class_names[i], probs[i], figure)
        rows.append({"path": path, "class": explainer.class_names[i], "probability": float(probs[i]), "figure": figure})
    return rows, skipped


def _free_name(folder: str, stem: str, ext: str) -> str:
    path, n = os.path.join(folder, stem + ext), 2
    while os.path.exists(path):
        path, n = os.path.join(folder, f"{stem}-{n}{ext}"), n + 1
    return path
