"""One decode for every file: what the serving graph decodes is what training decoded."""
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import write_every_kind, write_good
from PIL import Image

from keras_transfer import data
from keras_transfer.data import images

decode_in_graph = tf.function(images.decode_bytes)  # as inside the exported signature

# every kind write_every_kind writes that serve_bytes decodes (the transparent GIF it refuses)
DECODED = ["rgb.jpg", "grey.jpg", "cmyk.jpg", *[f"exif{o}.jpg" for o in range(1, 9)], "rgb.png", "rgba.png",
           "grey-alpha.png", "grey.png", "palette.png", "palette-transparent.png",
           *[f"16bit-{c}ch.png" for c in (1, 2, 3, 4)], "1bit.png", "rgb.bmp", "palette.bmp", "1bit.bmp", "rgbx.bmp", "rgba.bmp",
           "palette.gif", "animated.gif"]


@pytest.fixture(scope="module")
def every_kind(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    paths = write_every_kind(str(root / "kinds"), np.random.default_rng(3))
    write_good(str(root / "other.png"), np.random.default_rng(0))
    return paths


def test_the_loader_accepts_every_kind(every_kind):
    assert set(every_kind) == {*DECODED, "transparent.gif"}
    root = os.path.dirname(os.path.dirname(every_kind["rgb.png"]))
    os.makedirs(os.path.join(root, "other"), exist_ok=True)
    os.replace(os.path.join(root, "other.png"), os.path.join(root, "other", "other.png"))
    loaded = data.load_folder(root, 16, progress=False)
    assert not loaded.skipped and set(map(os.path.basename, loaded.paths)) >= set(every_kind)


@pytest.mark.parametrize("kind", DECODED)
def test_serving_decodes_the_pixels_training_decodes(every_kind, kind):
    trained = images.decode_file(every_kind[kind])
    served = decode_in_graph(tf.constant(open(every_kind[kind], "rb").read())).numpy()
    assert served.shape == trained.shape and served.dtype == np.uint8
    np.testing.assert_array_equal(served, trained)


def test_the_parity_test_has_teeth(every_kind):
    """What TensorFlow's own decoders give differs from training for these kinds, so equality
    above is the in-graph decoder's work: transparency on black, sideways photos, 16-bit rounding."""
    def plain(kind):
        return tf.io.decode_image(open(every_kind[kind], "rb").read(), channels=3, expand_animations=False).numpy()

    assert plain("rgba.png").mean() < images.decode_file(every_kind["rgba.png"]).mean() - 40  # black vs white
    assert plain("exif6.jpg").shape[:2] == images.decode_file(every_kind["exif6.jpg"]).shape[1::-1]
    assert np.abs(plain("exif3.jpg").astype(int) - images.decode_file(every_kind["exif3.jpg"])).max() > 100
    assert np.abs(plain("palette.png").astype(int) - images.decode_file(every_kind["palette.png"])).max() == 0
    assert np.abs(plain("palette-transparent.png").astype(int)
                  - images.decode_file(every_kind["palette-transparent.png"])).max() > 100


def test_a_transparent_gif_is_refused_in_the_graph_not_answered_differently(every_kind):
    trained = images.decode_file(every_kind["transparent.gif"])
    assert (trained == 255).all(axis=-1).any()  # its transparent pixels are white to training
    with pytest.raises(tf.errors.InvalidArgumentError, match="GIF with a transparent colour"):
        decode_in_graph(tf.constant(open(every_kind["transparent.gif"], "rb").read()))


def test_a_bmp_the_graph_cannot_read_as_pillow_does_is_refused(every_kind, tmp_path):
    blob = bytearray(open(every_kind["rgb.bmp"], "rb").read())
    blob[28:30] = (16).to_bytes(2, "little")  # declare 16 bits per pixel (5-5-5), which Pillow reads
    with pytest.raises(tf.errors.InvalidArgumentError, match="16-bit or run-length encoded"):
        decode_in_graph(tf.constant(bytes(blob)))


def _declaring(path, width, height):
    """A small JPEG whose header (SOF0) declares width x height."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, quality=90)
    blob = bytearray(open(path, "rb").read())
    sof = blob.index(b"\xff\xc0")
    blob[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    open(path, "wb").write(bytes(blob))
    return path


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_too_many_pixels_are_refused_before_decoding(tmp_path, fmt):
    if fmt == "png":  # a real 20000 x 20000 image of 1-bit pixels: a 60 kB file
        path = str(tmp_path / "bomb.png")
        Image.new("1", (20000, 20000)).save(path)
    else:
        path = _declaring(str(tmp_path / "bomb.jpg"), 20000, 20000)
    assert os.path.getsize(path) < 200_000
    with pytest.raises(ValueError, match=r"20000 x 20000 pixels is more than this package decodes|more pixels"):
        images.decode_file(path)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more pixels than this model decodes"):
        decode_in_graph(tf.constant(open(path, "rb").read()))


def test_an_image_at_the_bound_is_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 64)
    path = write_good(str(tmp_path / "a.png"), np.random.default_rng(0), size=(64, 64))
    assert images.decode_file(path).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="65 x 64 pixels"):
        images.decode_file(write_good(str(tmp_path / "b.png"), np.random.default_rng(0), size=(65, 64)))


def test_bytes_that_are_no_image_are_an_error(tmp_path):
    for blob in (b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + bytes(30)):
        with pytest.raises(tf.errors.InvalidArgumentError):
            decode_in_graph(tf.constant(blob))
