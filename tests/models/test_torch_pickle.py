"""The restricted reader of legacy PyTorch files: right values, and nothing else gets called."""

import collections
import pickle
import sys
import types

import numpy as np
import pytest

from keras_transfer.models._torch_pickle import MAGIC_NUMBER, PROTOCOL_VERSION, UnsafePickleError, read_state_dict


class _FakeTorch:
    """Stand-ins registered as ``torch`` and ``torch._utils`` so that pickle writes the same
    GLOBAL opcodes ``torch.save`` writes (the test machine has no PyTorch)."""

    def __init__(self, monkeypatch):
        torch = types.ModuleType("torch")
        utils = types.ModuleType("torch._utils")

        class FloatStorage:
            pass

        class LongStorage:
            pass

        def _rebuild_tensor_v2(*args):
            raise AssertionError("never called while writing")

        for obj, module in ((FloatStorage, "torch"), (LongStorage, "torch"), (_rebuild_tensor_v2, "torch._utils")):
            obj.__module__, obj.__qualname__ = module, obj.__name__
        torch.FloatStorage, torch.LongStorage, torch._utils = FloatStorage, LongStorage, utils
        utils._rebuild_tensor_v2 = _rebuild_tensor_v2
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "torch._utils", utils)
        self.torch, self.utils = torch, utils


class _Tensor:
    def __init__(self, fake, storage, offset, shape, stride):
        self.args = (fake.utils._rebuild_tensor_v2, (storage, offset, shape, stride, False, collections.OrderedDict()))

    def __reduce__(self):
        return self.args


class _StorageRef:
    def __init__(self, key, kind, data):
        self.key, self.kind, self.data = key, kind, data


def write_legacy(path, state, storages, fake, extra=None):
    """A file laid out as torch's ``_legacy_save`` writes it."""
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _StorageRef):
                return ("storage", getattr(fake.torch, obj.kind), obj.key, "cpu", obj.data.size, None)
            return None

    with open(path, "wb") as f:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(state if extra is None else extra)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(np.int64(s.data.size).tobytes())
            f.write(s.data.tobytes())


def test_reads_strided_tensors_and_offsets(tmp_path, monkeypatch):
    fake = _FakeTorch(monkeypatch)
    hwio = np.arange(2 * 3 * 3 * 4, dtype="<f4").reshape(3, 3, 2, 4)  # TF layout in memory
    conv = _StorageRef("1", "FloatStorage", hwio.ravel())
    both = _StorageRef("2", "FloatStorage", np.array([9, 1.5, -2, 7], "<f4"))
    count = _StorageRef("3", "LongStorage", np.array([12345], "<i8"))
    # the OIHW view of HWIO memory, as a converted TF checkpoint stores it
    state = collections.OrderedDict(
        conv=_Tensor(fake, conv, 0, (4, 2, 3, 3), (1, 4, 24, 8)),
        bias=_Tensor(fake, both, 1, (3,), (1,)),
        steps=_Tensor(fake, count, 0, (), ()),
    )
    path = tmp_path / "w.pth"
    write_legacy(path, state, [conv, both, count], fake)
    monkeypatch.delitem(sys.modules, "torch")  # the reader needs no torch
    got = read_state_dict(str(path))
    np.testing.assert_array_equal(got["conv"], hwio.transpose(3, 2, 0, 1))
    assert got["conv"].flags.c_contiguous
    np.testing.assert_array_equal(got["bias"], [1.5, -2, 7])
    assert got["steps"].shape == () and int(got["steps"]) == 12345


class _Call:
    """An object whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("evil", ["os.system", "builtins.eval", "torch._utils._rebuild_parameter",
                                  "collections.namedtuple", "numpy.load"])
def test_refuses_a_pickle_that_asks_for_any_other_callable(evil, tmp_path, monkeypatch):
    import importlib
    import os

    fake = _FakeTorch(monkeypatch)
    fake.utils._rebuild_parameter = lambda *a: None
    fake.utils._rebuild_parameter.__module__, fake.utils._rebuild_parameter.__qualname__ = "torch._utils", "_rebuild_parameter"
    module, name = evil.rsplit(".", 1)
    func = getattr(importlib.import_module(module) if module != "torch._utils" else fake.utils, name)
    marker = tmp_path / "ran"
    payload = collections.OrderedDict(w=_Call(func, f"touch {marker}" if evil == "os.system" else "1"))
    path = tmp_path / "evil.pth"
    write_legacy(path, None, [], fake, extra=payload)
    with pytest.raises(UnsafePickleError, match=rf"evil.pth.*asks to call [\w.]+\.{name}, "):
        read_state_dict(str(path))
    assert not os.path.exists(marker)


def test_refuses_a_file_that_is_not_a_legacy_checkpoint(tmp_path):
    zipped = tmp_path / "new.pth"
    zipped.write_bytes(b"PK\x03\x04" + b"\0" * 30)
    with pytest.raises(ValueError, match="zip-format.*legacy"):
        read_state_dict(str(zipped))
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a PyTorch weights file"):
        read_state_dict(str(text))


def test_refuses_a_truncated_storage(tmp_path, monkeypatch):
    fake = _FakeTorch(monkeypatch)
    s = _StorageRef("1", "FloatStorage", np.ones(8, "<f4"))
    path = tmp_path / "cut.pth"
    write_legacy(path, collections.OrderedDict(w=_Tensor(fake, s, 0, (8,), (1,))), [s], fake)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="storage '1'"):
        read_state_dict(str(path))
