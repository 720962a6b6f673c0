"""One decode + resize path, shared by training, ``predict`` and the serving signatures.

What is served is what was trained: a file becomes pixels through :func:`decode_file`
(Pillow: EXIF orientation applied, every mode made RGB) and :func:`resize` (TensorFlow's
antialiased bilinear resize, rounded to whole grey levels as a uint8 image stores them). The
exported model runs the same :func:`resize` in its graph, so an image served at any size gives
the pixels training saw. Only ``serve_bytes`` decodes inside the graph (JPEG with TensorFlow's
accurate IDCT, which gives Pillow's pixels; other formats with ``tf.io.decode_image``); it
cannot apply EXIF orientation or read CMYK, and README says so.

Why antialiased: a plain bilinear resize samples 4 pixels per output pixel, so shrinking a
photo several times skips most of its texture and gives pixels tens of grey levels away from
Pillow's (measured: 38-73 levels on fine texture); with antialiasing the two agree.

Why as two matrix products: ``tf.image.resize(antialias=True)`` runs TensorFlow's
``ScaleAndTranslate`` op, which TensorFlow Lite has neither as a builtin nor as a flex op, so
no export using it could be converted. :func:`resize` computes the same triangle filter
(``ScaleAndTranslate``'s weights: width scaled by the shrink factor, normalised per output
pixel) as a ``[out, in]`` matrix per axis, built from the input's shape at run time, and
applies it with two matmuls: ops every converter has. It agrees with ``tf.image.resize`` to
1e-3 grey levels before rounding (a pixel lying on a .5 boundary may round the other way).
"""

from __future__ import annotations

import os

import numpy as np


def decode_file(path: str) -> np.ndarray:
    """One image file -> ``(H, W, 3)`` uint8 RGB as a viewer shows it.

    EXIF orientation is applied; grey, palette, CMYK and 16-bit images become RGB; alpha is
    composited on white. Raises ValueError with a one-line reason for any file that cannot be
    used; other exceptions are the caller's to report (see ``data.load_folder``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()  # decodes fully: a truncated file fails here, not later in training
            image = ImageOps.exif_transpose(image)
            return to_rgb_array(image)
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode: {err}") from None


def to_rgb_array(image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB; 16-bit scaled down, alpha composited on white."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _triangle_weights(in_size, out_size: int):
    """``[out_size, in_size]`` float32: row i averages the input pixels under output pixel i with
    the antialiased bilinear (triangle) filter, as ``ScaleAndTranslate`` does (half-pixel
    centres; when shrinking the filter widens by the shrink factor; rows sum to 1)."""
    import tensorflow as tf

    in_f = tf.cast(in_size, tf.float32)
    scale = float(out_size) / in_f
    width = tf.maximum(1.0 / scale, 1.0)
    centres = (tf.range(out_size, dtype=tf.float32) + 0.5) / scale
    sources = tf.range(tf.cast(in_size, tf.int32), dtype=tf.float32) + 0.5
    w = tf.maximum(0.0, 1.0 - tf.abs(sources[None, :] - centres[:, None]) / width)
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


def resize(images, size):
    """``(N, h, w, 3)`` or ``(h, w, 3)`` pixels (any dtype, 0..255) -> float32 at ``size``.

    Antialiased bilinear (two matrix products, see the module's docstring), then rounded and
    clipped to whole grey levels: exactly what a uint8 training image holds. A TensorFlow
    function of tensors, so it runs eagerly in the loader and inside the exported model's
    graph (SavedModel and TensorFlow Lite) alike.
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    single = x.shape.rank == 3
    if single:
        x = x[None]
    height, width = (int(s) for s in size)
    shape = tf.shape(x)
    x = tf.einsum("oh,nhwc->nowc", _triangle_weights(shape[1], height), x)
    x = tf.einsum("pw,nowc->nopc", _triangle_weights(shape[2], width), x)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return x[0] if single else x


def resize_array(images: np.ndarray, size, batch: int = 512) -> np.ndarray:
    """:func:`resize` on a numpy array, in batches; returns uint8. Same size: returned as is."""
    images = np.asarray(images)
    size = tuple(int(s) for s in size)
    single = images.ndim == 3
    if single:
        images = images[None]
    if tuple(images.shape[1:3]) == size:
        out = np.ascontiguousarray(images, dtype=np.uint8)
    else:
        out = np.empty((len(images), *size, images.shape[-1]), dtype=np.uint8)
        for i in range(0, len(images), batch):
            out[i:i + batch] = resize(images[i:i + batch], size).numpy().astype(np.uint8)
    return out[0] if single else out


def read_image(path: str, size) -> np.ndarray:
    """:func:`decode_file` then :func:`resize_array`: a file as training sees it, uint8."""
    return resize_array(decode_file(path), size)
