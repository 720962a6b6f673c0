"""Run and search folders that defend themselves: the lock, settings and data on resume."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from keras_transfer import data
from keras_transfer._utils import atomic_files
from keras_transfer.runs import run_folders

HOLD = ("import sys, time\nfrom keras_transfer.runs import run_folders\nwith run_folders.locked(sys.argv[1], 'keras-transfer train'):\n"
        "    print('held', flush=True)\n    time.sleep(600)\n")


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid_and_a_killed_holder_holds_nothing(tmp_path):
    folder = str(tmp_path / "run")
    holder = _holder(folder)
    try:
        with pytest.raises(run_folders.FolderInUseError, match=rf"in use by process {holder.pid} \(keras-transfer train\)"):
            with run_folders.locked(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folders.locked(folder):  # SIGKILL released it
        assert run_folders.contents(folder) == []
    assert not os.path.exists(os.path.join(folder, run_folders.LOCK_FILE))


def test_a_refused_command_leaves_no_folder_behind(tmp_path):
    folder = str(tmp_path / "new")
    with pytest.raises(ValueError):
        with run_folders.locked(folder):
            raise ValueError("bad argument")
    assert not os.path.exists(folder)
    os.makedirs(folder)
    open(os.path.join(folder, "mine.txt"), "w").close()
    with pytest.raises(ValueError):
        with run_folders.locked(folder):
            raise ValueError("bad argument")
    assert os.listdir(folder) == ["mine.txt"]  # a folder that was there stays, as it was


def test_settings_changes_name_what_differs():
    saved = {"data": {"image_size": 32, "dir": "a"}, "search": {"trials": 4, "widths": [8, 16]}, "distribute": {"precision": "float32"}}
    asked = {"data": {"image_size": 40, "dir": "a"}, "search": {"trials": 9, "widths": (8, 16)}, "distribute": {"precision": "bfloat16"}}
    assert run_folders.settings_changes(saved, asked, ("distribute", "search.trials")) == [("data.image_size", 32, 40)]


def test_a_setting_added_after_a_folder_was_started_counts_as_its_default():
    import dataclasses

    from keras_transfer.runs.config import TrainConfig

    saved = dataclasses.asdict(TrainConfig())
    del saved["recipe"]["bn_inference"]  # a run started before the option existed
    assert run_folders.settings_changes(saved, TrainConfig()) == []
    asked = TrainConfig()
    asked.recipe.bn_inference = False
    assert run_folders.settings_changes(saved, asked) == [("recipe.bn_inference", "recipe's", False)]


def _splits(rng, n=6):
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    whole = data.ImageSet(images, np.arange(n) % 2, ["a", "b"], paths=[f"/d/{'ab'[i % 2]}/{i}.png" for i in range(n)])
    return data.Splits(whole.subset(range(4)), whole.subset([4]), whole.subset([5]), ["a", "b"])


def test_data_changes_say_what_was_added_removed_and_changed(rng):
    splits = _splits(rng)
    before = run_folders.data_fingerprint(splits)
    assert run_folders.data_changes(before, run_folders.data_fingerprint(splits)) is None
    assert before["images"] == 6 and set(before["files"]) == set(splits.train.paths + splits.val.paths + splits.test.paths)
    changed = _splits(np.random.default_rng(1))
    changed.train.images[0] = splits.train.images[0]
    changed.train.paths[1] = "/d/b/new.png"
    said = run_folders.data_changes(before, run_folders.data_fingerprint(changed))
    assert "1 image(s) added (e.g. /d/b/new.png)" in said and "1 removed (e.g. /d/b/1.png)" in said
    assert "4 changed or moved to another class" in said  # images 2..5 have other pixels; 0 is the same


def test_built_in_data_without_files_is_fingerprinted_by_its_pixels(rng):
    splits = _splits(rng)
    for part in (splits.train, splits.val, splits.test):
        part.paths = None
    before = run_folders.data_fingerprint(splits)
    splits.test.images[0, 0, 0, 0] ^= 1
    assert "1 image(s) added" in run_folders.data_changes(before, run_folders.data_fingerprint(splits))


def test_temporaries_of_killed_processes_are_removed_and_a_running_writers_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-{dead.pid}-3-abc"
    (stale / "variables").mkdir(parents=True)
    (stale / "variables" / "variables.data").write_bytes(b"x" * 1000)
    live = tmp_path / f"{atomic_files.temporary_prefix()}4-def"
    live.mkdir()
    mine = tmp_path / ".tmp-notes.txt"  # not ours: no pid
    mine.write_text("keep")
    assert atomic_files.remove_stale_temporaries(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and mine.read_text() == "keep"
