"""The seed papers' experiments in a tiny configuration: structure, figure and resuming, not accuracy."""
import json

from keras_transfer import experiments
from keras_transfer.cli import main


def test_layer_removal_tiny_run_and_resume(tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["experiment", "layer-removal", "--dataset", "digits", "--limit-per-class", "6", "--input-size", "32",
            "--removed-max", "2", "--seeds", "1", "--epochs", "1", "--fine-tune-epochs", "1", "--precision", "float32",
            "--out", str(out)]
    assert main(argv) == 0
    result = json.load(open(out / "results.json"))
    assert set(result["cells"]) == {f"0/{r}/{m}" for r in range(3) for m in experiments.MODES}
    assert all(0 <= v <= 1 for v in result["cells"].values())
    assert set(result["accuracy"]) == set(experiments.MODES) and set(result["probe_accuracy"]) == {"0", "1", "2"}
    assert set(result["kendall_tau"]) == set(experiments.MODES)
    assert (out / "layer_removal.png").read_bytes()[:4] == b"\x89PNG"
    assert "Kendall tau" in capsys.readouterr().out
    # killed after its cells? the same command finds them all and trains nothing new
    cells = dict(result["cells"])
    result["cells"] = {k: v for k, v in cells.items() if not k.startswith("0/2/")}
    json.dump({k: result[k] for k in ("config", "cells", "probe")}, open(out / "results.json", "w"))
    assert main(argv) == 0
    again = json.load(open(out / "results.json"))
    assert {k: again["cells"][k] for k in result["cells"]} == result["cells"] and len(again["cells"]) == len(cells)
