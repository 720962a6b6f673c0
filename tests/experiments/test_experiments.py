"""The seed papers' experiments in a tiny configuration: structure, figure and resuming, not accuracy."""
import json

from keras_transfer.cli.entry_point import main
from keras_transfer.experiments import layer_removal


def test_layer_removal_tiny_run_and_resume(tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "layer-removal", "--dataset", "digits", "--limit-per-class", "6", "--input-size", "32",
            "--removed-max", "2", "--seeds", "1", "--epochs", "1", "--fine-tune-epochs", "1", "--precision", "float32",
            "--out", str(out)]
    assert main(argv) == 0
    result = json.load(open(out / "results.json"))
    assert set(result["cells"]) == {f"0/{r}/{m}" for r in range(3) for m in layer_removal.MODES}
    assert all(0 <= v <= 1 for v in result["cells"].values())
    assert set(result["accuracy"]) == set(layer_removal.MODES) and set(result["probe_accuracy"]) == {"0", "1", "2"}
    assert set(result["kendall_tau"]) == set(layer_removal.MODES)
    assert (out / "layer_removal.png").read_bytes()[:4] == b"\x89PNG"
    assert "Kendall tau" in capsys.readouterr().out
    # killed after its cells? the same command finds them all and trains nothing new
    cells = dict(result["cells"])
    result["cells"] = {k: v for k, v in cells.items() if not k.startswith("0/2/")}
    json.dump({k: result[k] for k in ("config", "cells", "probe")}, open(out / "results.json", "w"))
    assert main(argv) == 0
    again = json.load(open(out / "results.json"))
    assert {k: again["cells"][k] for k in result["cells"]} == result["cells"] and len(again["cells"]) == len(cells)
    # started before --in-memory existed: its results.json lacks the setting, which was its default
    saved = json.load(open(out / "results.json"))
    del saved["config"]["in_memory"]
    json.dump(saved, open(out / "results.json", "w"))
    assert main(argv) == 0
    assert main([*argv, "--in-memory", "yes"]) == 2  # asking for another value is still a change
    assert "other settings" in capsys.readouterr().err


def test_layer_removal_on_streamed_files(tmp_path, capsys):
    from keras_transfer import data

    folder = data.sample_guitars(str(tmp_path / "g"), n_per_class=5, seed=0, size=40)
    out = tmp_path / "exp"
    assert main(["experiment", "layer-removal", "--data", folder, "--in-memory", "no", "--input-size", "32",
                 "--weights", "none", "--removed-max", "1", "--seeds", "1", "--epochs", "1", "--fine-tune-epochs",
                 "0", "--precision", "float32", "--out", str(out)]) == 0
    result = json.load(open(out / "results.json"))
    assert result["config"]["in_memory"] == "no" and len(result["cells"]) == 4
    assert set(result["probe_accuracy"]) == {"0", "1"}


# ---------------------------------------------------------------- the A/B experiments (small conv net)

import numpy as np
import pytest

from keras_transfer.experiments import smallnet

TINY = ["--dataset", "digits", "--limit-per-class", "12", "--input-size", "16", "--seeds", "1", "--epochs", "1",
        "--width", "4", "--precision", "float32"]


@pytest.fixture
def few_steps(monkeypatch):
    monkeypatch.setattr(smallnet, "MIN_STEPS", 1)  # the real floor (for few-shot B) would make tiny runs slow


def _png(path):
    return path.read_bytes()[:4] == b"\x89PNG"


def _four_colours(root, n=8):
    from helpers import write_good

    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 220)),
                         ("grey", (128, 128, 128))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            write_good(str(root / name / f"{i}.png"), rng, colour=colour)
    return str(root)


@pytest.mark.parametrize("name", ["transferability", "binary-aux"])
def test_the_class_split_experiments_run_on_streamed_files(tmp_path, capsys, few_steps, name):
    folder = _four_colours(tmp_path / "d")
    out = tmp_path / "exp"
    argv = ["experiment", name, "--data", folder, "--in-memory", "no", "--input-size", "16", "--seeds", "1",
            "--epochs", "1", "--width", "4", "--precision", "float32", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    result = json.load(open(out / "results.json"))
    assert result["config"]["in_memory"] == "no"
    assert result["cells"] and all(0 <= v <= 1 for v in result["cells"].values())


def test_transferability_tiny_run_resumes_without_retraining(tmp_path, capsys, caplog, few_steps):
    out = tmp_path / "tr"
    argv = ["experiment", "transferability", *TINY, "--a-classes", "0,1,2,3,4", "--out", str(out)]
    assert main(argv) == 0
    result = json.load(open(out / "results.json"))
    conditions = ("BnB", "BnB+", "AnB", "AnB+")
    expected = {f"{split}/0/{c}/{n}" for split in ("random", "named") for c in conditions for n in range(1, 6)}
    assert set(result["cells"]) == expected | {"random/0/baseB/0", "named/0/baseB/0"}
    assert set(result["accuracy"]) == {"random", "named"} and result["splits"]["named"] == list("01234")
    assert set(result["accuracy"]["named"]) == {"baseB", *conditions}
    paired = result["minus_base_b"]["named"]["AnB"]["5"]["mean"]
    assert paired == pytest.approx(result["cells"]["named/0/AnB/5"] - result["cells"]["named/0/baseB/0"])
    assert _png(out / "transferability.png") and "AnB+" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "sources").iterdir()) == sorted(
        f"{s}-0-base{p}.keras" for s in ("random", "named") for p in "AB")
    # a killed run: the same command trains only what is missing, reusing the saved sources
    del result["cells"]["named/0/AnB+/5"]
    json.dump(result, open(out / "results.json", "w"))
    caplog.clear()
    with caplog.at_level("INFO", logger="keras_transfer"):
        assert main(argv) == 0
    assert "trained" not in caplog.text and caplog.text.count("cell ") == 1
    assert "named/0/AnB+/5" in json.load(open(out / "results.json"))["cells"]


def test_an_experiment_folder_refuses_other_settings(tmp_path, capsys, few_steps):
    out = tmp_path / "kc"
    assert main(["experiment", "keep-classifier", *TINY, "--frozen-max", "0", "--out", str(out)]) == 0
    before = (out / "results.json").read_text()
    assert main(["experiment", "keep-classifier", *TINY, "--frozen-max", "1", "--out", str(out)]) == 2
    assert "other settings; choose another out_dir" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before


def test_keep_classifier_tiny_run(tmp_path, capsys, few_steps):
    out = tmp_path / "kc"
    assert main(["experiment", "keep-classifier", *TINY, "--frozen-max", "1", "--out", str(out)]) == 0
    result = json.load(open(out / "results.json"))
    assert set(result["cells"]) == {f"0/{h}/{f}" for h in ("dropped", "kept") for f in (0, 1)}
    diff = result["accuracy"]["kept_minus_dropped"]["1"]["mean"]
    assert diff == pytest.approx(result["cells"]["0/kept/1"] - result["cells"]["0/dropped/1"])
    assert _png(out / "keep_classifier.png") and "kept - dropped" in capsys.readouterr().out


def test_binary_aux_tiny_run_is_paired(tmp_path, capsys, few_steps):
    out = tmp_path / "ba"
    assert main(["experiment", "binary-aux", *TINY, "--b-per-class", "0,3", "--out", str(out)]) == 0
    result = json.load(open(out / "results.json"))
    conditions = {"A/all", *(f"{m}/{b}" for m in ("frozen", "reduced_lr") for b in ("all", "3"))}
    assert set(result["accuracy"]) == conditions
    for condition, row in result["accuracy"].items():
        seed_cells = {s: result["cells"][f"0/{condition}/{s}"] for s in ("baseline", "binary")}
        assert row["differences"] == [pytest.approx(seed_cells["binary"] - seed_cells["baseline"])]
    assert _png(out / "binary_aux.png") and "binary - baseline" in capsys.readouterr().out


def test_transfer_copies_and_freezes_the_first_units():
    source = smallnet.build((16, 16, 3), 5, seed=0, width=4)
    target = smallnet.transfer(source, smallnet.build((16, 16, 3), 3, seed=1, width=4), 2, freeze=True)
    for name in smallnet.UNITS:
        same = all(np.array_equal(a, b) for a, b in zip(source.get_layer(name).get_weights(),
                                                         target.get_layer(name).get_weights()))
        assert same == (name in ("conv1", "conv2")) and target.get_layer(name).trainable == (name not in ("conv1", "conv2"))
    assert smallnet.transfer(source, smallnet.build((16, 16, 3), 3, seed=1, width=4), 2, freeze=False).get_layer("conv1").trainable
    with pytest.raises(ValueError, match="Received: n=6"):
        smallnet.transfer(source, target, 6, freeze=True)


def test_reduced_rate_slows_the_transferred_units_only(few_steps):
    from keras_transfer import data

    images = np.random.default_rng(0).integers(0, 255, (32, 16, 16, 3), dtype=np.uint8)
    part = data.ImageSet(images, np.arange(32) % 3, ["a", "b", "c"])
    model = smallnet.build((16, 16, 3), 3, seed=0, width=4)
    before = {n: model.get_layer(n).get_weights()[0].copy() for n in ("conv1", "fc5")}
    smallnet.fit(model, part, part, 2, seed=0, lr_scales=smallnet.lr_scales_for(model, 1, 0.0))
    assert np.array_equal(before["conv1"], model.get_layer("conv1").get_weights()[0])  # factor 0: unchanged
    assert not np.array_equal(before["fc5"], model.get_layer("fc5").get_weights()[0])


@pytest.mark.slow
def test_keep_classifier_with_a_pretrained_source_keeps_its_imagenet_classifier(tmp_path, capsys):
    out = tmp_path / "kc-pretrained"
    # Lite0's ImageNet weights (and 1000-way classifier) are installed: the experiment as Shermin et al. ran it
    argv = ["experiment", "keep-classifier", "--backbone", "efficientnet_lite0", "--dataset", "digits",
            "--limit-per-class", "4", "--seeds", "1", "--epochs", "1", "--frozen-max", "1", "--precision", "float32",
            "--out", str(out)]
    assert main(argv) == 0
    result = json.load(open(out / "results.json"))
    assert set(result["cells"]) == {f"0/{h}/{f}" for h in ("dropped", "kept") for f in (0, 1)}
    assert result["units"] == ["block1a_project_bn"] and _png(out / "keep_classifier.png")
    assert main([*argv[:-1], str(tmp_path / "other"), "--input-size", "96"]) == 2
    assert "needs efficientnet_lite0's input size 224. Received: input_size=96" in capsys.readouterr().err
    assert main([*argv[:-1], str(tmp_path / "other"), "--a-classes", "0,1"]) == 2
    assert "not to a pretrained backbone source" in capsys.readouterr().err
    assert main(["experiment", "keep-classifier", *TINY, "--weights", "none", "--out", str(tmp_path / "w")]) == 2
    assert "give backbone too" in capsys.readouterr().err
