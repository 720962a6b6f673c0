"""Real image files for tests: good ones in many modes, and the broken kinds users have."""
import os

import numpy as np
from PIL import Image


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
