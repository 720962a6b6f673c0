"""One decode + resize path, shared by training, ``predict`` and the serving signatures.

What is served is what was trained: a file becomes pixels through :func:`decode_file`
(Pillow: EXIF orientation applied, every mode made RGB) and :func:`resize` (TensorFlow's
antialiased bilinear resize, rounded to whole grey levels as a uint8 image stores them). The
exported model runs the same :func:`resize` in its graph, so an image served at any size gives
the pixels training saw. ``serve_bytes`` decodes inside the graph with :func:`decode_bytes`,
which gives :func:`decode_file`'s pixels for every kind of file the loader accepts (a test holds
them equal, kind by kind): JPEG with TensorFlow's accurate IDCT and the EXIF orientation read
from the file's bytes, PNG and 32-bit BMP alpha composited on white with Pillow's arithmetic,
16-bit channels cut to their high byte as Pillow does. The one kind it cannot decode the same
way, a GIF whose first frame has a transparent colour (TensorFlow's decoder does not say which
pixels are transparent), it refuses with an error instead of answering differently.

Every path bounds the pixels it decodes (:data:`MAX_PIXELS`) before decoding, so a small file
declaring 20000 x 20000 pixels is refused instead of allocating gigabytes.

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

# 64 megapixels (8192 x 8192): a 48-megapixel phone photo fits; decoded as float32 for the
# resize it is 0.8 GB, about what one request may cost a server
MAX_PIXELS = 1 << 26


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
            check_pixels(*image.size)  # before decoding: the header's size, not the pixels
            image.load()  # decodes fully: a truncated file fails here, not later in training
            image = ImageOps.exif_transpose(image)
            return to_rgb_array(image)
    except UnidentifiedImageError:
        raise ValueError("not an image Pillow can read") from None
    except Image.DecompressionBombError as err:  # Pillow's own bound, far above MAX_PIXELS
        raise ValueError(f"more pixels than this package decodes ({MAX_PIXELS:,}): DecompressionBombError: {err}") from None
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode: {err}") from None


def check_pixels(width: int, height: int) -> None:
    """Refuse an image above :data:`MAX_PIXELS` (ValueError saying its size and the bound)."""
    if width * height > MAX_PIXELS:
        raise ValueError(f"{width} x {height} pixels is more than this package decodes "
                         f"({MAX_PIXELS:,} pixels, keras_transfer.data.images.MAX_PIXELS); shrink the image first")


def to_rgb_array(image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB; 16-bit cut to the high byte, alpha composited on white."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        # the high byte, as Pillow itself reads 16-bit RGB, RGBA and grey+alpha PNGs
        arr = (np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
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
    # an image with no pixels would resize to black and get an answer; refuse it instead
    tf.debugging.assert_positive(shape[1:3], message="an image has a height or width of 0 pixels: nothing to "
                                 "classify (images must be [N, H, W, 3] with H, W >= 1)")
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


# --- decoding encoded bytes inside a TensorFlow graph (the ``serve_bytes`` signature) ---------

def _unsigned(raw, offsets, size: int, little):
    """The ``size``-byte unsigned integer(s) at ``offsets`` of the uint8 vector ``raw`` (int64);
    bytes past the end read as 0. ``little``: byte order, a bool or a boolean tensor."""
    import tensorflow as tf

    offsets = tf.cast(offsets, tf.int64)
    index = offsets[..., None] + tf.range(size, dtype=tf.int64)
    n = tf.size(raw, out_type=tf.int64)
    values = tf.where(index < n, tf.cast(tf.gather(raw, tf.clip_by_value(index, 0, n - 1)), tf.int64),
                      tf.zeros_like(index))
    weights = tf.constant([256 ** i for i in range(size)], tf.int64)
    return tf.where(little, tf.reduce_sum(values * weights, -1), tf.reduce_sum(values * weights[::-1], -1))


def _tiff_orientation(raw, tiff):
    """EXIF tag 0x0112 of the TIFF structure starting at offset ``tiff`` (1 when absent)."""
    import tensorflow as tf

    little = _unsigned(raw, tiff, 2, False) == 0x4949  # "II"
    ifd = tiff + _unsigned(raw, tiff + 4, 4, little)
    count = tf.minimum(_unsigned(raw, ifd, 2, little), 1024)
    entries = ifd + 2 + 12 * tf.range(count, dtype=tf.int64)
    tags = _unsigned(raw, entries, 2, little)
    values = _unsigned(raw, entries + 8, 2, little)  # a SHORT sits in the first 2 bytes of the value
    found = tf.boolean_mask(values, tags == 0x0112)
    return tf.cond(tf.size(found) > 0, lambda: found[0], lambda: tf.constant(1, tf.int64))


def _jpeg_orientation(raw):
    """The EXIF orientation of a JPEG (1 when it has none): walks the segments before the scan
    to the first ``APP1 "Exif\\0\\0"`` segment, as Pillow does."""
    import tensorflow as tf

    n = tf.size(raw, out_type=tf.int64)

    def searching(pos, orientation, done):
        return tf.logical_and(tf.logical_not(done), pos + 4 <= n)

    def step(pos, orientation, done):
        marker = _unsigned(raw, pos, 2, False)
        is_exif = tf.logical_and(marker == 0xFFE1, tf.logical_and(_unsigned(raw, pos + 4, 4, False) == 0x45786966,
                                                                   _unsigned(raw, pos + 8, 2, False) == 0))
        not_a_segment = tf.logical_or(marker < 0xFF01, tf.logical_or(marker == 0xFFDA, marker == 0xFFD9))
        orientation = tf.cond(is_exif, lambda: _tiff_orientation(raw, pos + 10), lambda: orientation)
        return pos + 2 + _unsigned(raw, pos + 2, 2, False), orientation, tf.logical_or(is_exif, not_a_segment)

    _, orientation, _ = tf.while_loop(searching, step, (tf.constant(2, tf.int64), tf.constant(1, tf.int64),
                                                        tf.constant(False)))
    return orientation


def _orient(image, orientation):
    """Pillow's ``ImageOps.exif_transpose`` for EXIF orientations 1-8 (others: unchanged)."""
    import tensorflow as tf

    def transpose(x):
        return tf.transpose(x, (1, 0, 2))

    def flip(x, axes):
        return tf.reverse(x, axes)

    branches = [lambda: image, lambda: image,                           # 0 (invalid), 1 (upright)
                lambda: flip(image, [1]), lambda: flip(image, [0, 1]),   # 2 mirrored, 3 upside down
                lambda: flip(image, [0]), lambda: transpose(image),      # 4 flipped, 5 transposed
                lambda: transpose(flip(image, [0])),                     # 6 turned 90 degrees clockwise to view
                lambda: transpose(flip(image, [0, 1])),                  # 7 transverse
                lambda: transpose(flip(image, [1]))]                     # 8 turned 90 degrees anticlockwise
    index = tf.where(orientation > 8, tf.zeros_like(orientation), orientation)
    return tf.switch_case(tf.cast(index, tf.int32), branches)


def _gif_has_transparency(raw):
    """Whether the extension blocks before a GIF's first image give it a transparent colour."""
    import tensorflow as tf

    n = tf.size(raw, out_type=tf.int64)
    packed = _unsigned(raw, 10, 1, True)
    table = tf.where(packed >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), packed % 8),
                     tf.zeros_like(packed))

    def skip_sub_blocks(p):
        return tf.while_loop(lambda q: tf.logical_and(q < n, _unsigned(raw, q, 1, True) > 0),
                             lambda q: q + 1 + _unsigned(raw, q, 1, True), (p,))[0] + 1

    def in_extensions(pos, transparent):
        return tf.logical_and(pos < n, _unsigned(raw, pos, 1, True) == 0x21)

    def step(pos, transparent):
        control = _unsigned(raw, pos + 1, 1, True) == 0xF9
        flag = _unsigned(raw, pos + 3, 1, True) % 2 == 1
        return skip_sub_blocks(pos + 2), tf.logical_or(transparent, tf.logical_and(control, flag))

    return tf.while_loop(in_extensions, step, (13 + table, tf.constant(False)))[1]


def _png_has_alpha(raw):
    """An alpha channel (colour type 4 or 6) or a ``tRNS`` chunk before the image data. (Asked
    for 4 channels, TensorFlow fills a low-bit-depth PNG's missing alpha with 2^depth - 1, not 255.)"""
    import tensorflow as tf

    n = tf.size(raw, out_type=tf.int64)

    def before_data(pos, found):
        return tf.logical_and(tf.logical_not(found), tf.logical_and(pos + 8 <= n, _unsigned(raw, pos + 4, 4, False) != 0x49444154))

    def step(pos, found):  # a chunk: length, type, data, CRC
        return pos + 12 + _unsigned(raw, pos, 4, False), _unsigned(raw, pos + 4, 4, False) == 0x74524E53  # "tRNS"

    colour_type = _unsigned(raw, 25, 1, False)
    trns = tf.while_loop(before_data, step, (tf.constant(8, tf.int64), tf.constant(False)))[1]
    return tf.logical_or(tf.logical_or(colour_type == 4, colour_type == 6), trns)


def _bmp_palette_image(raw):
    """An uncompressed 1-, 4- or 8-bit BMP's pixels through its colour table (TensorFlow's
    ``decode_bmp`` reads such files' indices as grey levels)."""
    import tensorflow as tf

    def le(offset, size):
        return _unsigned(raw, offset, size, True)

    width, stored_height, depth = le(18, 4), le(22, 4), le(28, 2)
    bottom_up = stored_height < 1 << 31
    height = tf.where(bottom_up, stored_height, (1 << 32) - stored_height)
    row_bytes = (depth * width + 31) // 32 * 4
    y, x = tf.meshgrid(tf.range(height), tf.range(width), indexing="ij")
    row = tf.where(bottom_up, height - 1 - y, y)
    bit = x * depth
    byte = le(le(10, 4) + row * row_bytes + bit // 8, 1)
    index = tf.bitwise.bitwise_and(tf.bitwise.right_shift(byte, 8 - depth - bit % 8),
                                   tf.bitwise.left_shift(tf.constant(1, tf.int64), depth) - 1)
    colour = 14 + le(14, 4) + 4 * index  # the table follows the header; entries are B, G, R, 0
    return tf.cast(tf.stack([le(colour + 2, 1), le(colour + 1, 1), le(colour, 1)], axis=-1), tf.uint8)


def _composite_on_white(rgba):
    """``(H, W, 4)`` -> ``(H, W, 3)`` uint8 over white, with Pillow's ``alpha_composite``
    integer arithmetic (7 bits of precision, rounded division by 255): equal to the last bit."""
    import tensorflow as tf

    x = tf.cast(rgba, tf.int32)
    alpha = x[..., 3:]
    t = 128 * (x[..., :3] * alpha + 255 * (255 - alpha)) + (128 << 7)
    return tf.cast(tf.bitwise.right_shift(tf.bitwise.right_shift(tf.bitwise.right_shift(t, 8) + t, 8), 7), tf.uint8)


def _header_size(raw, is_jpeg, encoded):
    """(width, height) from the file's header, before any pixel is decoded (0, 0 if unknown)."""
    import tensorflow as tf

    def jpeg():
        shape = tf.io.extract_jpeg_shape(encoded, output_type=tf.int64)
        return shape[1], shape[0]

    def other():
        magic = _unsigned(raw, 0, 4, False)
        png = (_unsigned(raw, 16, 4, False), _unsigned(raw, 20, 4, False))
        gif = (_unsigned(raw, 6, 2, True), _unsigned(raw, 8, 2, True))
        bmp_height = _unsigned(raw, 22, 4, True)
        bmp = (_unsigned(raw, 18, 4, True), tf.where(bmp_height >= 1 << 31, (1 << 32) - bmp_height, bmp_height))
        kind = tf.stack([magic == 0x89504E47, magic == 0x47494638, magic // 65536 == 0x424D])
        sizes = tf.stack([tf.stack(png), tf.stack(gif), tf.stack(bmp)])
        found = tf.boolean_mask(sizes, kind)
        return tf.cond(tf.shape(found)[0] > 0, lambda: (found[0][0], found[0][1]),
                       lambda: (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))

    return tf.cond(is_jpeg, jpeg, other)


def decode_bytes(encoded):
    """One encoded JPEG/PNG/BMP/GIF (a scalar string tensor) -> ``(H, W, 3)`` uint8: the pixels
    :func:`decode_file` gives for the same file, computed with TensorFlow ops (for a SavedModel
    signature). Raises ``InvalidArgumentError`` for undecodable bytes, for more than
    :data:`MAX_PIXELS` pixels (checked on the header, before decoding) and for a GIF with a
    transparent colour."""
    import tensorflow as tf

    raw = tf.io.decode_raw(encoded, tf.uint8)
    is_jpeg = tf.io.is_jpeg(encoded)
    width, height = _header_size(raw, is_jpeg, encoded)
    check = tf.debugging.Assert(width * height <= MAX_PIXELS, [
        f"the image has more pixels than this model decodes ({MAX_PIXELS:,}, keras_transfer.data.images.MAX_PIXELS); "
        "shrink it first. Received: width x height =", width, height])
    magic = _unsigned(raw, 0, 4, False)
    with tf.control_dependencies([check]):
        jpeg = lambda: _orient(tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),  # noqa: E731
                               _jpeg_orientation(raw))
        image = tf.case([(is_jpeg, jpeg),
                         (magic == 0x89504E47, lambda: _png_in_graph(encoded, raw)),
                         (magic // 65536 == 0x424D, lambda: _bmp_in_graph(encoded, raw)),
                         (magic == 0x47494638, lambda: _gif_in_graph(encoded, raw))],
                        # anything else: decode_image's own error for bad bytes
                        default=lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
                        exclusive=True)
    return tf.ensure_shape(image, (None, None, 3))


def _png_in_graph(encoded, raw):
    """A PNG as Pillow reads it: 16-bit channels cut to their high byte, alpha composited on white."""
    import tensorflow as tf

    sixteen = _unsigned(raw, 24, 1, False) == 16  # byte 24: the bit depth

    def decoded(channels):
        return tf.cond(sixteen, lambda: tf.cast(tf.bitwise.right_shift(
            tf.io.decode_png(encoded, channels, tf.uint16), 8), tf.uint8),
            lambda: tf.io.decode_png(encoded, channels))

    return tf.cond(_png_has_alpha(raw), lambda: _composite_on_white(decoded(4)), lambda: decoded(3))


def _bmp_in_graph(encoded, raw):
    """A BMP as Pillow reads it (palettes, a declared alpha mask), or an error for what the graph cannot."""
    import tensorflow as tf

    depth, compression = _unsigned(raw, 28, 2, True), _unsigned(raw, 30, 4, True)
    readable = tf.debugging.Assert(tf.logical_or(
        tf.logical_and(compression == 0, tf.reduce_any(depth == tf.constant([1, 4, 8, 24, 32], tf.int64))),
        tf.logical_and(compression == 3, depth == 32)), [
        "this BMP (16-bit or run-length encoded) cannot be decoded in the graph as training decodes it; "
        "decode it (PIL) and send the pixels to serving_default. Received: bits per pixel, compression =",
        depth, compression])
    # a 32-bit BMP declaring an alpha mask (a header of 56+ bytes) is RGBA to Pillow
    alpha = tf.logical_and(depth == 32, tf.logical_and(_unsigned(raw, 14, 4, True) >= 56,
                                                       _unsigned(raw, 66, 4, True) > 0))
    with tf.control_dependencies([readable]):
        return tf.case([(depth <= 8, lambda: _bmp_palette_image(raw)),
                        (alpha, lambda: _composite_on_white(tf.io.decode_bmp(encoded, channels=4)))],
                       default=lambda: tf.io.decode_bmp(encoded, channels=3))


def _gif_in_graph(encoded, raw):
    """A GIF's first frame; one with a transparent colour is refused (training composites it on white)."""
    import tensorflow as tf

    refuse = tf.debugging.Assert(tf.logical_not(_gif_has_transparency(raw)), [
        "a GIF with a transparent colour cannot be decoded in the graph as training decodes it "
        "(composited on white); decode it (PIL) and send the pixels to serving_default"])
    with tf.control_dependencies([refuse]):
        return tf.io.decode_gif(encoded)[0]
