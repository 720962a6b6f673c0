import atexit
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# the on-disk feature cache of streamed sets: never the user's ~/.cache, and gone when the
# session ends (xdist workers inherit the folder from the process that made it)
if "KERAS_TRANSFER_CACHE_DIR" not in os.environ:
    os.environ["KERAS_TRANSFER_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras-transfer-test-features-")
    atexit.register(shutil.rmtree, os.environ["KERAS_TRANSFER_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import SMALL_SIZE, TRAIN, make_class_folder  # noqa: E402

from keras_transfer.models import backbones  # noqa: E402


@pytest.fixture(scope="session")
def small_base():
    """Build (and cache) each backbone at its small size with random weights."""
    cache = {}

    def get(name):
        if name not in cache:
            s = SMALL_SIZE[name]
            cache[name] = backbones.build_base(name, weights=None, input_shape=(s, s, 3))
        return cache[name]

    return get


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A run folder trained through the CLI from a folder with bad files: (root, run, bad files)."""
    from keras_transfer.cli.entry_point import main

    root = tmp_path_factory.mktemp("e2e")
    bad = make_class_folder(str(root / "imgs"), np.random.default_rng(0))
    run = str(root / "run")
    assert main(["train", "--data", str(root / "imgs"), *TRAIN, "--out", run]) == 0
    return root, run, bad
