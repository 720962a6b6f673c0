"""Helpers shared by the tests (imported as ``helpers``; conftest.py only holds fixtures).

Small backbone sizes, real image files (good ones in many modes, and the broken kinds users
have), and readiness checks for tests that start processes.
"""
import os
import socket
import time

import numpy as np
from PIL import Image

from keras_transfer import backbones

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
