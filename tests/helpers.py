"""Helpers shared by the tests (imported as ``helpers``; conftest.py only holds fixtures).

Small backbone sizes, real image files (good ones in many modes, and the broken kinds users
have), and readiness checks for tests that start processes.
"""
import os
import socket
import time

import numpy as np
from PIL import Image

from keras_transfer.models import backbones

# Small inputs keep CPU tests fast: each backbone at its minimum size, InceptionV3 at 75.
SMALL_SIZE = {name: max(row.min_size, 32) for name, row in backbones.BACKBONES.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc=None, timeout: float = 120.0) -> None:
    """Return once something listens on 127.0.0.1:``port``; fail early if ``proc`` exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited (code {proc.returncode}) before listening on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on port {port} within {timeout:.0f} s")


def write_good(path, rng, size=(40, 36), mode="RGB", colour=None):
    colour = np.array(colour if colour is not None else rng.integers(0, 255, 3), dtype=np.uint8)
    arr = np.clip(colour + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    if mode != "RGB":
        image = image.convert(mode)
    ext = os.path.splitext(path)[1].lower()
    image.save(path, **({"quality": 90} if ext in (".jpg", ".jpeg") else {}))
    return path


def write_rgba_png(path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 200          # red where opaque
    rgba[:10, :, 3] = 255       # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def write_16bit_png(path, value=65535):
    Image.fromarray(np.full((16, 16), value, dtype=np.uint16)).save(path)  # mode I;16
    return path


def write_truncated_jpeg(path, rng):
    write_good(path, rng, size=(64, 64))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


def make_class_folder(root, rng, n_good=8):
    """root/{red,blue}/... good images in varied modes, plus the five kinds of bad file.
    Returns the set of paths that must be reported as skipped."""
    red, blue = os.path.join(root, "red"), os.path.join(root, "blue")
    os.makedirs(os.path.join(red, "nested"), exist_ok=True)
    os.makedirs(blue, exist_ok=True)
    for i in range(n_good):
        write_good(os.path.join(red, f"r{i}.jpg"), rng, colour=(220, 30, 30))
        write_good(os.path.join(blue, f"b{i}.png"), rng, colour=(30, 30, 220))
    write_good(os.path.join(red, "nested", "deep.bmp"), rng, colour=(220, 30, 30))
    write_good(os.path.join(red, "cmyk.jpg"), rng, mode="CMYK", colour=(220, 30, 30))
    write_good(os.path.join(blue, "palette.gif"), rng, mode="P", colour=(30, 30, 220))
    write_good(os.path.join(blue, "grey.png"), rng, mode="L", colour=(30, 30, 220))
    write_rgba_png(os.path.join(red, "rgba.png"))
    write_16bit_png(os.path.join(blue, "sixteen.png"))
    bad = {
        write_truncated_jpeg(os.path.join(red, "truncated.jpg"), rng),
        os.path.join(blue, "empty.jpg"),
        os.path.join(red, "notes.jpg"),
        os.path.join(blue, "readme.txt"),
    }
    open(os.path.join(blue, "empty.jpg"), "wb").close()
    with open(os.path.join(red, "notes.jpg"), "w") as f:
        f.write("this is a text file with a .jpg name\n")
    with open(os.path.join(blue, "readme.txt"), "w") as f:
        f.write("not an image\n")
    return bad


def write_bomb_png(path, side=30000):
    """A valid PNG header declaring side x side pixels: Pillow refuses it (DecompressionBombError,
    not an OSError) before reading any pixel."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))
    return path


def write_textured(path, rng, side=160, quality=95):
    """Fine texture (1-2 pixel stripes and noise) several times larger than a model's input:
    what a resize without antialiasing gets wrong."""
    yy, xx = np.mgrid[:side, :side]
    base = rng.integers(0, 255, 3)
    stripes = ((xx + 2 * yy) % 3 == 0)[..., None] * rng.integers(60, 160, 3)
    arr = np.clip(base * 0.5 + stripes + rng.normal(0, 30, (side, side, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, **({"quality": quality} if path.lower().endswith((".jpg", ".jpeg")) else {}))
    return path


def write_exif_rotated_jpeg(path, size=(40, 20), orientation=6):
    """A wide JPEG whose EXIF says 'rotate 90 degrees': a viewer shows it tall."""
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (255, 0, 0)  # left half red
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), quality=95)
    return path


def _bmp_with_alpha(path, rgba):
    """A 32-bit BMP with a BITMAPV4HEADER declaring an alpha mask (Pillow reads it as RGBA)."""
    import struct

    h, w, _ = rgba.shape
    pixels = rgba[::-1][..., [2, 1, 0, 3]].tobytes()  # rows bottom-up, BGRA
    header = struct.pack("<IiiHHIIiiII", 108, w, h, 1, 32, 3, len(pixels), 2835, 2835, 0, 0)
    header += struct.pack("<IIII", 0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000) + b"BGRs" + bytes(48)
    offset = 14 + len(header)
    with open(path, "wb") as f:
        f.write(b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + pixels)


def write_every_kind(folder, rng, size=(60, 40)) -> dict:
    """One file of every kind the loader accepts (JPEG, PNG, BMP, GIF in each mode Pillow reads
    from them: grey, palette, CMYK, alpha, palette transparency, 16-bit, EXIF orientations 1-8,
    animation), textured, with transparent and half-transparent bands. Returns {kind: path}."""
    import tensorflow as tf

    os.makedirs(folder, exist_ok=True)
    w, h = size
    rgb = np.clip(rng.normal(128, 60, (h, w, 3)), 0, 255).astype(np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha[: h // 4], alpha[h // 4: h // 2] = 0, 255
    palette = Image.fromarray(rgb).quantize(16)
    paths = {}

    def put(kind, image=None, **save):
        paths[kind] = os.path.join(folder, kind)
        if image is not None:
            image.save(paths[kind], **save)

    put("rgb.jpg", Image.fromarray(rgb), quality=90)
    put("grey.jpg", Image.fromarray(rgb[..., 0]), quality=90)
    put("cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=90)
    for orientation in range(1, 9):
        image = Image.fromarray(rgb)
        exif = image.getexif()
        exif[0x0112] = orientation
        put(f"exif{orientation}.jpg", image, exif=exif, quality=90)
    put("rgb.png", Image.fromarray(rgb))
    put("rgba.png", Image.fromarray(np.dstack([rgb, alpha])))
    put("grey-alpha.png", Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA"))
    put("grey.png", Image.fromarray(rgb[..., 0]))
    put("palette.png", palette)
    put("palette-transparent.png", palette, transparency=3)
    for channels in (1, 2, 3, 4):
        deep = rng.integers(0, 65536, (h, w, channels)).astype(np.uint16)
        put(f"16bit-{channels}ch.png")
        tf.io.write_file(paths[f"16bit-{channels}ch.png"], tf.io.encode_png(deep))
    put("rgb.bmp", Image.fromarray(rgb))
    put("palette.bmp", palette)
    put("1bit.bmp", Image.fromarray(rgb[..., 0]).convert("1"))
    put("1bit.png", Image.fromarray(rgb[..., 0]).convert("1"))
    put("rgbx.bmp", Image.fromarray(np.dstack([rgb, alpha])))  # 32-bit, alpha ignored by every reader
    put("rgba.bmp")
    _bmp_with_alpha(paths["rgba.bmp"], np.dstack([rgb, alpha]))
    put("palette.gif", palette)
    frames = [Image.fromarray(np.roll(rgb, 7 * i, axis=1)).quantize(32) for i in range(3)]
    put("animated.gif", frames[0], save_all=True, append_images=frames[1:])
    put("transparent.gif", palette, transparency=3)
    return paths


# A tiny `train` through the CLI: VGG16 without weights at 32x32, one epoch a stage.
TRAIN = ["--backbone", "vgg16", "--weights", "none", "--input-size", "32", "--removed", "3",
         "--width", "8", "--epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "8", "--val-split", "0.2",
         "--test-split", "0.2"]


# Shared by the streaming and disk-cache tests

def two_colour_classes(root, rng, n=12, size=(40, 36)):
    """Two classes (red, blue) of ``n`` JPEG and PNG files each under ``root``."""
    for name, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            write_good(os.path.join(root, name, f"{name}{i}.{'jpg' if i % 2 else 'png'}"), rng, size=size,
                       colour=colour)
    return str(root)


def streaming_recipe(**kw):
    """A short recipe the streamed-vs-in-memory tests train with (frozen through block3_pool)."""
    from keras_transfer.training import recipes

    return recipes.recipe(head_epochs=2, fine_tune_epochs=1, frozen="block3_pool", batch_size=4, verbose=0, seed=2, **kw)


def vgg_at_32(num_classes=2):
    """VGG16 without weights at 32x32, removed 3, seeded."""
    import keras

    from keras_transfer import training

    keras.utils.set_random_seed(0)
    return training.build_model("vgg16", num_classes, weights=None, input_size=32, removed=3)


def headless_chromium():
    """A headless Debian chromium under selenium (quit it when done); skipped where chromium or
    chromedriver is missing, a failure under CI (``.ci/run`` installs them)."""
    import shutil

    import pytest

    driver_path, browser = shutil.which("chromedriver"), shutil.which("chromium")
    if not (driver_path and browser):
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
