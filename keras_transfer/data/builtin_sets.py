"""The built-in datasets, all offline: ELPV solar cells, Fashion-MNIST (Debian's files), scikit-learn's
digits, a TFDS name, and the synthetic guitars.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import os

import numpy as np

from keras_transfer.data import images as images_lib
from keras_transfer.data.image_folders import each_file
from keras_transfer.data.image_sets import ImageSet, _size, limit_per_class
from keras_transfer.data.images import read_image
from keras_transfer.data.in_memory import RunCost, streams
from keras_transfer.data.streaming import FileImages

logger = logging.getLogger(__name__)
BUILTIN_DATASETS = ("elpv", "elpv_4class", "fashion_mnist", "digits")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


# ---------------------------------------------------------------- built-in datasets

def _resize_all(images: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, h, w[, c]) uint8 -> (N, H, W, 3) uint8 through the shared resize."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images_lib.resize_array(images, image_size)


def elpv(image_size=300, variant: str = "binary", limit: int | None = None, seed: int = 0,
         in_memory: str = "yes", cost: RunCost | None = None) -> ImageSet:
    """ELPV (Deitsch et al. 2019): 2,624 real 300x300 electroluminescence images of solar cells.

    ``binary``: defective (defect probability >= 0.5) vs functional; ``4class``: the four
    annotated probabilities 0, 1/3, 2/3, 1. ``limit`` keeps at most that many images per
    class, chosen from ``seed`` *before* decoding, so a small sample loads in a second.
    """
    spec = importlib.util.find_spec("elpv_dataset")
    if spec is None:
        raise ValueError("the elpv dataset needs the 'elpv-dataset' package: pip install elpv-dataset")
    folder = os.path.join(list(spec.submodule_search_locations)[0], "data")
    table = np.genfromtxt(os.path.join(folder, "labels.csv"), dtype=["|S19", "<f8", "|S4"],
                          names=["path", "probability", "type"])
    files = np.char.decode(table["path"])
    probs = table["probability"]
    if variant == "binary":
        labels, names = (probs >= 0.5).astype(np.int32), ["functional", "defective"]
    elif variant == "4class":
        labels = np.round(probs * 3).astype(np.int32)
        names = ["p0", "p1_3", "p2_3", "p1"]
    else:
        raise ValueError(f"elpv variant must be 'binary' or '4class', got {variant!r}.")
    keep = np.arange(len(files))
    if limit:
        rng = np.random.default_rng(seed)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:limit] for c in range(len(names))]))
    size = _size(image_size)
    paths = [os.path.join(folder, f) for f in files[keep]]
    if streams(in_memory, len(paths), size, "elpv", cost):
        return ImageSet(FileImages(paths, size), labels[keep], names, paths=paths)
    images = np.empty((len(paths), *size, 3), np.uint8)
    for i, (path, _, pixels, err) in enumerate(each_file([(p, 0) for p in paths], lambda p: read_image(p, size),
                                                          "reading elpv", None, False)):
        if err is not None:
            raise err
        images[i] = pixels
    return ImageSet(images, labels[keep], names, paths=paths)


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(image_size=28) -> ImageSet:
    """Fashion-MNIST (70,000 28x28 grey images, 10 classes), all offline.

    From Keras's cache (``$KERAS_HOME/datasets/fashion-mnist``) if present, else the Debian
    package's idx files under /usr/share/datasets/fashion-mnist.
    """
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    for folder in (os.path.join(keras_home, "datasets", "fashion-mnist"), *FASHION_MNIST_DIRS):
        paths = [os.path.join(folder, n) for n in names]
        if all(os.path.exists(p) for p in paths):
            x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
            images = np.concatenate([x_train, x_test])
            labels = np.concatenate([y_train, y_test]).astype(np.int32)
            return ImageSet(_resize_all(images, _size(image_size)), labels, list(FASHION_MNIST_CLASSES))
    raise FileNotFoundError(
        "Fashion-MNIST not found offline. Install it with 'apt-get install dataset-fashion-mnist' "
        "(Debian) or run keras.datasets.fashion_mnist.load_data() once with internet access."
    )


def digits(image_size=32) -> ImageSet:
    """scikit-learn's digits: 1,797 8x8 grey images of handwritten digits, 10 classes."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images / 16.0 * 255.0).astype(np.uint8)
    return ImageSet(_resize_all(images, _size(image_size)), d.target.astype(np.int32), [str(i) for i in range(10)])


def from_tfds(name: str, image_size=224, split: str = "train", data_dir: str | None = None) -> ImageSet:
    """Any image-classification TFDS dataset already downloaded (nothing is downloaded here)."""
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(name, split=split, as_supervised=True, with_info=True, download=False, data_dir=data_dir)
    except Exception as err:  # TFDS raises AssertionError/DatasetNotFoundError for missing data
        raise ValueError(
            f"TFDS dataset {name!r} is not available offline ({err}). Download it once with "
            f"tfds.load({name!r}) on a machine with internet access, then pass its data_dir."
        ) from None
    images, labels = [], []
    for image, label in tfds.as_numpy(ds):
        images.append(_resize_all(image[None], _size(image_size))[0])
        labels.append(int(label))
    label_feature = info.features[info.supervised_keys[1]]
    names = list(getattr(label_feature, "names", None) or [str(i) for i in range(max(labels) + 1)])
    return ImageSet(np.stack(images), np.array(labels, dtype=np.int32), names)


def builtin(name: str, image_size=224, limit: int | None = None, seed: int = 0, in_memory: str = "yes",
            cost: RunCost | None = None) -> ImageSet:
    """A built-in dataset by name: elpv, elpv_4class, fashion_mnist, digits, or tfds:NAME.

    ``limit`` keeps at most that many images per class (chosen from ``seed``). Only ELPV has
    files to stream (``in_memory="no"``); the others come as arrays.
    """
    if name in ("elpv", "elpv_4class"):
        return elpv(image_size, "binary" if name == "elpv" else "4class", limit, seed, in_memory, cost)
    if in_memory == "no":
        raise ValueError(f"dataset {name!r} comes as arrays, not files: there is nothing to stream. Use "
                         f"in_memory='auto' or 'yes' (or a folder of its images as data_dir). Received: "
                         f"dataset={name!r}, in_memory='no'")
    if name == "fashion_mnist":
        data = fashion_mnist(image_size)
    elif name == "digits":
        data = digits(image_size)
    elif name.startswith("tfds:"):
        data = from_tfds(name[len("tfds:"):], image_size)
    else:
        raise ValueError(f"Unknown dataset {name!r}. Built-in: {', '.join(BUILTIN_DATASETS)}, or tfds:NAME.")
    return limit_per_class(data, limit, seed) if limit else data
