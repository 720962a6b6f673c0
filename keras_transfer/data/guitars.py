"""A synthetic guitar dataset, so the guitar notebook runs out of the box with no download.

The pictures are *drawn*, not photographed: three solid-body outlines that differ the way the
real ones do (Stratocaster: offset double cutaway with a longer upper horn; Les Paul: one
cutaway, round body; SG: symmetric pointed horns), with a neck and headstock, in random
colours, poses, sizes, backgrounds and noise. Point the notebook at real photos for real use.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

CLASSES = ("les_paul", "sg", "stratocaster")


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _horn(x, y, tip_x, tip_y, base_y, half_width):
    """A horn: a triangle from a base at ``base_y`` (centred under the tip) up to the tip."""
    t = (base_y - y) / max(base_y - tip_y, 1e-6)
    return (t >= 0) & (t <= 1) & (np.abs(x - tip_x) <= half_width * (1 - t))


def body_mask(kind: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of a guitar body in body coordinates (x right, y down the body, ~[-0.5, 0.6])."""
    if kind == "les_paul":
        body = _ellipse(x, y, 0, 0.22, 0.42, 0.36) | _ellipse(x, y, -0.02, -0.12, 0.32, 0.28)
        body &= ~_ellipse(x, y, 0.30, -0.34, 0.16, 0.22)  # the single (treble-side) cutaway
    elif kind == "stratocaster":
        body = _ellipse(x, y, 0, 0.22, 0.43, 0.35) | _ellipse(x, y, 0, -0.08, 0.36, 0.27)
        body |= _ellipse(x, y, -0.26, -0.36, 0.10, 0.22)  # long upper (bass) horn
        body |= _ellipse(x, y, 0.25, -0.27, 0.09, 0.14)   # short lower horn
        body &= ~_ellipse(x, y, 0.0, -0.42, 0.15, 0.26)
    elif kind == "sg":
        body = _ellipse(x, y, 0, 0.20, 0.36, 0.31) | _ellipse(x, y, 0, -0.05, 0.30, 0.22)
        body |= _horn(x, y, -0.26, -0.52, -0.12, 0.11) | _horn(x, y, 0.26, -0.52, -0.12, 0.11)
        body &= ~_ellipse(x, y, 0.0, -0.36, 0.14, 0.24)
    else:
        raise ValueError(f"unknown guitar kind {kind!r}; one of {CLASSES}")
    return body


def draw_guitar(kind: str, rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """One ``(size, size, 3)`` uint8 picture of a guitar of ``kind`` in a random pose."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size - 0.5
    angle = rng.uniform(-np.pi / 5, np.pi / 5)
    scale = rng.uniform(0.75, 1.05)
    shift = rng.uniform(-0.06, 0.06, size=2)
    cos, sin = np.cos(angle), np.sin(angle)
    # image -> body coordinates; the guitar (body + neck) spans ~1.6 units, so shrink it in
    u = (xx - shift[0]) * 1.7 / scale
    v = (yy - shift[1]) * 1.7 / scale
    x = cos * u + sin * v
    y = -sin * u + cos * v - 0.3  # body sits low, the neck goes up

    background = rng.uniform(0, 255, size=3)
    gradient = rng.uniform(-40, 40) * (yy[..., None] + 0.5)
    image = np.clip(background + gradient + rng.normal(0, 10, (size, size, 3)), 0, 255)

    body = body_mask(kind, x, y)
    colour = rng.uniform(0, 255, size=3)
    image[body] = colour
    if kind == "les_paul":  # carved-top sunburst: darker edge
        edge = body & ~body_mask(kind, x * 1.15, (y - 0.05) * 1.15 + 0.05)
        image[edge] = colour * 0.45
    if kind == "stratocaster":  # white pickguard over the lower-left of the body
        guard = body & _ellipse(x, y, -0.05, 0.12, 0.24, 0.3) & (x < 0.12)
        image[guard] = (235, 235, 230)
    neck = (np.abs(x) < 0.05) & (y < -0.2) & (y > -1.05)
    head = (np.abs(x + (0.02 if kind == "stratocaster" else 0)) < 0.08) & (y <= -1.05) & (y > -1.28)
    wood = rng.uniform(120, 200) * np.array([1.0, 0.75, 0.45])
    image[neck] = wood
    image[head] = wood * 0.6 if kind != "stratocaster" else wood
    strings = (np.abs(np.abs(x) - 0.02) < 0.004) & (y < 0.35) & (y > -1.05)
    image[strings] = 220
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def sample_guitars(out_dir: str, n_per_class: int = 40, seed: int = 0, size: int = 160) -> str:
    """Write ``out_dir/{les_paul,sg,stratocaster}/NNN.jpg``; refuses to overwrite existing files.

    ```python
    >>> import os, tempfile
    >>> folder = kt.sample_guitars(tempfile.mkdtemp(), n_per_class=2)
    >>> sorted(os.listdir(folder)), len(os.listdir(os.path.join(folder, "sg")))
    (['les_paul', 'sg', 'stratocaster'], 2)

    ```
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}.")
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        folder = os.path.join(out_dir, kind)
        os.makedirs(folder, exist_ok=True)
        for i in range(n_per_class):
            path = os.path.join(folder, f"{kind}_{i:04d}.jpg")
            if os.path.exists(path):
                raise FileExistsError(f"{path} exists; write the sample into an empty folder.")
            Image.fromarray(draw_guitar(kind, rng, size)).save(path, quality=92)
    return out_dir
