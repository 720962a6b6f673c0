"""The guitar notebook runs headless, small, offline, and its exported model reloads."""
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(__file__))
NOTEBOOK = os.path.join(ROOT, "notebooks", "guitar_classifier.ipynb")


@pytest.mark.slow
def test_guitar_notebook_end_to_end(tmp_path, monkeypatch):
    small = {
        "KT_DATA_DIR": str(tmp_path / "guitars"),  # empty: the notebook writes the synthetic sample
        "KT_OUT_DIR": str(tmp_path / "out"),
        "KT_BACKBONE": "vgg16", "KT_WEIGHTS": "hed",  # offline: no download is tried
        "KT_IMAGE_SIZE": "48", "KT_SAMPLE_PER_CLASS": "8", "KT_HEAD_EPOCHS": "1", "KT_FINE_TUNE_EPOCHS": "1",
        "KT_WIDTH": "16", "KT_BATCH_SIZE": "8", "KT_TRIALS": "2", "KT_TRIAL_EPOCHS": "1",
        "KT_SEARCH_SIZE": "32",  # the search runs on smaller copies, as by default
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    for key, value in small.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = "\n".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "SYNTHETIC sample" in outputs
    assert "switching to VGG16" not in outputs  # hed was asked for: no download was tried
    assert "searching on 32x32 copies" in outputs
    assert "winner at 48px: test accuracy" in outputs  # the winner is retrained at full size, and exported
    result = json.load(open(tmp_path / "out" / "notebook_result.json"))
    assert os.path.exists(os.path.join(result["export"], "saved_model.pb"))
    assert result["reload_max_diff"] < 1e-5
    assert 0 <= result["test_accuracy"] <= 1 and result["best_trial"]["status"] == "COMPLETED"
    for png in ("history.png", "confusion_matrix.png", "heatmap.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
