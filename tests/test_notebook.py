"""The guitar notebook runs headless, small, offline; a reader sees figures that hold the
training history, an export chosen on validation, and a TFLite file that answers as it does."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(__file__))
NOTEBOOK = os.path.join(ROOT, "notebooks", "guitar_classifier.ipynb")

# run in the notebook's kernel after its last cell: what the figures were drawn from
REPORT = '''
import json as _json
print("KT_REPORT " + _json.dumps({"curves": curves, "stage1": stage1, "stage2": stage2, "scores": scores,
                                  "shipped": shipped_name, "backbone": BACKBONE}, default=float))
'''


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
    texts = [o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    outputs = "\n".join(texts)
    assert "SYNTHETIC sample" in outputs
    assert "could not get" not in outputs  # the installed ImageNet Lite0 loaded: nothing to fall back from
    assert "NOTE: the rest of this notebook runs efficientnet_lite0" in outputs  # the text says which network runs
    assert "searching on 32x32 copies" in outputs
    assert "No artists with labels" not in outputs

    report = json.loads(next(t for t in texts if t.startswith("KT_REPORT ")).split(" ", 1)[1])
    curves, stage1, stage2 = report["curves"], report["stage1"], report["stage2"]
    # the training-curve figure shows both stages, and what it shows is the history
    assert curves["loss train (head)"] == pytest.approx(stage1["loss"]) and len(stage1["loss"]) == 2
    assert curves["loss val (fine_tune)"] == pytest.approx(stage2["val_loss"]) and len(stage2["val_loss"]) == 2
    assert curves["accuracy train (fine_tune)"] == pytest.approx(stage2["accuracy"])
    # the shipped model is the better one on validation (a tie: the one with fewer parameters)
    scores = report["scores"]
    assert report["shipped"] == max(scores, key=lambda name: tuple(scores[name]))
    assert f"shipping the {report['shipped']} (chosen on validation)" in outputs

    result = json.load(open(tmp_path / "out" / "notebook_result.json"))
    assert result["shipped"] == report["shipped"] and result["val_scores"][report["shipped"]] == scores[report["shipped"]][0]
    assert os.path.exists(os.path.join(result["export"], "saved_model.pb"))
    assert result["reload_max_diff"] < 1e-5 and result["tflite_max_diff"] < 1e-3
    assert 0 <= result["test_accuracy"] <= 1 and result["best_trial"]["status"] == "COMPLETED"
    assert "misclassified test image(s) shown" in outputs and "heatmaps of" in outputs
    peaks = [float(v) for v in outputs.split("peaks ")[1].splitlines()[0].split(", ")]
    assert len(peaks) >= 2 and all(p == 1.0 or p == 0.0 for p in peaks) and max(peaks) == 1.0  # drawn heatmaps
    for png in ("history.png", "confusion_matrix.png", "misclassified.png", "heatmap.png", "gradcam.png"):
        assert (tmp_path / "out" / png).stat().st_size > 5000  # a drawn figure, not an empty canvas
