"""The guitar notebook runs headless, small, offline; a reader sees figures that hold the
training history, an export chosen on validation, and a TFLite file that answers as it does."""
import ast
import json
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(__file__))
NOTEBOOK = os.path.join(ROOT, "notebooks", "guitar_classifier.ipynb")

# run in the notebook's kernel after its last cell: what the figures were drawn from
REPORT = '''
import json as _json
print("KT_REPORT " + _json.dumps({"drawn": kt.plots.drawn_series(curves), "histories": learner.histories,
                                  "val_scores": val_scores, "shipped": shipped_name, "test_accuracy": shipped_accuracy,
                                  "saved_model_diff": float(saved_model_diff), "tflite_diff": float(tflite_diff),
                                  "removed": learner.removed, "probe": learner.probe["recommended_removed"]},
                                 default=float))
'''
# a cell whose last line draws: its output must hold the image a reader sees
DRAWS = re.compile(r"(\.plot\w*\(|kt\.plots\.\w+\(|^curves$)")


def _code_lines(cell) -> list[str]:
    return [line for line in cell.source.splitlines() if line.strip() and not line.strip().startswith(("#", "%"))]


def test_the_notebook_is_a_tutorial_on_the_public_api_only():
    import keras_transfer as kt

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert max(len(_code_lines(cell)) for cell in code) <= 10  # every step short
    used = set()
    for cell in code:
        tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kt":
                used.add(node.attr)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.endswith("__"):
                raise AssertionError(f"the notebook reaches a private name: {node.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.startswith("keras_transfer.") for n in names), names  # kt.<name> only
        assert not re.search(r"\"(head|fine_tune)\"", cell.source) or "lr_find" in cell.source  # no stage strings
    assert used <= set(kt.__all__), used - set(kt.__all__)
    assert {"Learner", "load_data", "search", "Predictor"} <= used


@pytest.mark.slow
def test_guitar_notebook_end_to_end(tmp_path, monkeypatch):
    small = {
        "KT_DATA_DIR": str(tmp_path / "guitars"),  # empty: the notebook writes the synthetic sample
        "KT_OUT_DIR": str(tmp_path / "out"),
        # the notebook's offline fallback, named up front: its ImageNet weights come installed, no download is tried
        "KT_BACKBONE": "efficientnet_lite0", "KT_WEIGHTS": "imagenet",
        "KT_IMAGE_SIZE": "48", "KT_SAMPLE_PER_CLASS": "8", "KT_HEAD_EPOCHS": "2", "KT_FINE_TUNE_EPOCHS": "2",
        "KT_WIDTH": "16", "KT_BATCH_SIZE": "8", "KT_TRIALS": "2", "KT_TRIAL_EPOCHS": "1",
        "KT_SEARCH_SIZE": "32",  # the search runs on smaller copies, as by default
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for key, value in small.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    texts = [o.get("text", "") for cell in code for o in cell.get("outputs", [])]
    outputs = "\n".join(texts)
    assert "SYNTHETIC sample" in outputs
    assert "could not get" not in outputs  # the installed ImageNet Lite0 loaded: nothing to fall back from
    assert "NOTE: the rest of this notebook runs efficientnet_lite0" in outputs  # the text says which network runs
    assert "searching on 32x32 copies" in outputs
    assert "No artists with labels" not in outputs

    # every cell that draws shows its figure inline (a library that set a backend would blank them)
    drawing = [cell for cell in code[:-1] if DRAWS.search(_code_lines(cell)[-1].strip())]
    assert len(drawing) == 9  # examples, probe, curves, confusion, predictions, mistakes, lr_find, heat map, Grad-CAM
    for cell in drawing:
        assert any({"image/png", "image/jpeg"} & set(o.get("data", {})) for o in cell.outputs), cell.source

    report = json.loads(next(t for t in texts if t.startswith("KT_REPORT ")).split(" ", 1)[1])
    drawn, histories = report["drawn"], report["histories"]
    # the training-curve figure shows both stages, and what it shows is the history
    assert drawn["loss train (head)"] == pytest.approx(histories["head"]["loss"]) and len(histories["head"]["loss"]) >= 1
    assert drawn["loss val (fine_tune)"] == pytest.approx(histories["fine_tune"]["val_loss"])
    assert drawn["accuracy train (fine_tune)"] == pytest.approx(histories["fine_tune"]["accuracy"])
    assert report["removed"] == report["probe"]  # the cut `train` makes
    # the shipped model is the better one on validation; a tie goes to the model `train` makes
    scores = report["val_scores"]
    assert report["shipped"] == max(scores, key=lambda name: (scores[name], name == "first model"))
    assert f"shipping the {report['shipped']} (chosen on validation): test accuracy {report['test_accuracy']:.3f}" \
        in outputs
    assert report["saved_model_diff"] < 1e-4 and report["tflite_diff"] < 1e-3
    assert "misclassified test image(s) shown" in outputs
