"""Read a legacy (pre-1.6, non-zip) PyTorch ``state_dict`` file into NumPy arrays, without PyTorch.

A ``.pth`` file is a pickle, and a pickle can call any importable function while it loads. This
reader follows the Python docs' "restricting globals" recipe: its unpickler resolves only
``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` (replaced by a function that
records the tensor's storage, offset, shape and strides) and the ``torch.*Storage`` type names,
and raises :class:`UnsafePickleError` for anything else. Storages are then read as raw bytes.

Legacy layout (``torch/serialization.py``, ``_legacy_save``): pickles of the magic number, the
protocol version and the system info, then the pickled object (storages as persistent ids
``("storage", type, key, location, numel)``), then the pickled list of storage keys, then per
key an int64 element count followed by the raw little-endian elements.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from typing import NamedTuple

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks to call something a weights file has no reason to call."""


class _Storage(NamedTuple):
    key: str
    dtype: str
    numel: int


class _TensorRef(NamedTuple):
    storage: _Storage
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file)
        self._path = path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        raise UnsafePickleError(
            f"{self._path}: refusing to load it, it asks to call {module}.{name}, which a weights file has no "
            f"reason to call (only OrderedDict, _rebuild_tensor_v2 and storage types are allowed). "
            f"Use a state_dict saved by PyTorch from a trusted source.")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and pid[1] in _STORAGE_DTYPES):
            raise UnsafePickleError(f"{self._path}: unexpected persistent id {pid!r}; not a tensor storage.")
        return _Storage(str(pid[2]), _STORAGE_DTYPES[pid[1]], int(pid[4]))


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a legacy PyTorch ``state_dict`` file, by name, as C-contiguous arrays.

    Raises:
        UnsafePickleError: the pickle asks for any callable other than the allowed ones.
        ValueError: not a legacy PyTorch file, truncated, or not a flat dict of tensors.
    """
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"PK":
        raise ValueError(f"{path}: a zip-format PyTorch file (torch >= 1.6); only the legacy format is read here. "
                         f"Re-save it with torch.save(..., _use_new_zipfile_serialization=False).")
    stream = io.BytesIO(data)
    try:
        header = [_RestrictedUnpickler(stream, path).load() for _ in range(3)]
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        if isinstance(err, UnsafePickleError):
            raise
        raise ValueError(f"{path}: not a PyTorch weights file ({err}).") from None
    if header[0] != MAGIC_NUMBER or header[1] != PROTOCOL_VERSION:
        raise ValueError(f"{path}: not a legacy PyTorch weights file (magic {header[0]!r}, protocol {header[1]!r}).")
    state = _RestrictedUnpickler(stream, path).load()
    keys = _RestrictedUnpickler(stream, path).load()
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict (names to tensors).")
    storages = _read_storages(stream, [str(k) for k in keys], {v.storage.key: v.storage for v in state.values()}, path)
    return {name: _view(storages[ref.storage.key], ref) for name, ref in state.items()}


def _read_storages(stream: io.BytesIO, keys: list[str], known: dict[str, _Storage], path: str) -> dict:
    out = {}
    for key in keys:
        storage = known.get(key)
        raw = stream.read(8)
        if storage is None or len(raw) < 8:
            raise ValueError(f"{path}: storage {key!r} is missing or truncated.")
        (numel,) = struct.unpack("<q", raw)
        nbytes = numel * np.dtype(storage.dtype).itemsize
        buf = stream.read(nbytes)
        if numel != storage.numel or len(buf) != nbytes:
            raise ValueError(f"{path}: storage {key!r} holds {len(buf)} bytes, expected {storage.numel} elements.")
        out[key] = np.frombuffer(buf, dtype=storage.dtype)
    return out


def _view(flat: np.ndarray, ref: _TensorRef) -> np.ndarray:
    if ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride)) >= flat.size:
        raise ValueError(f"tensor of shape {ref.shape} does not fit its storage of {flat.size} elements.")
    if not ref.shape:
        return np.array(flat[ref.offset])
    item = flat.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.shape,
                                           strides=tuple(s * item for s in ref.stride), writeable=False)
    return np.ascontiguousarray(view)
