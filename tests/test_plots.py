import numpy as np

from keras_transfer import plots


def test_misclassified_shows_the_most_confident_mistakes_first(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 3)).astype("uint8")
    labels = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.95, 0.05], [0.2, 0.8], [0.5, 0.5]])
    fig = plots.misclassified(images, labels, probs, ["cat", "dog"], str(tmp_path / "m.png"), max_images=2)
    shown = plots.mistakes(labels, probs, ["cat", "dog"], max_images=2)
    assert [r["index"] for r in shown] == [3, 4]  # wrong: 2 (0.6), 3 (0.95), 4 (0.8); the top two shown
    assert shown[0] == {"index": 3, "true": "dog", "predicted": "cat", "probability": 0.95, "name": None}
    assert (tmp_path / "m.png").stat().st_size > 3000
    titles = [ax.get_title() for ax in fig.axes if ax.images]  # the panels a reader sees
    assert titles == ["true dog\npredicted cat (0.95)", "true cat\npredicted dog (0.80)"]
    assert fig._suptitle.get_text() == "4 of 6 test images misclassified, the 2 most confident shown"


def test_misclassified_with_no_mistakes_still_draws(tmp_path):
    fig = plots.misclassified(np.zeros((2, 4, 4, 3), "uint8"), [0, 1], [[1, 0], [0, 1]], ["a", "b"],
                              str(tmp_path / "m.png"))
    assert fig._suptitle.get_text() == "no test image misclassified (of 2)" and (tmp_path / "m.png").exists()


def test_training_curves_draw_each_stages_history_after_the_last():
    fig = plots.training_curves([("head", {"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.7]}),
                                 ("fine_tune", {"loss": [0.4], "val_loss": [0.6], "accuracy": [0.8]})])
    drawn = plots.drawn_series(fig)
    assert drawn == {"loss train (head)": [1.0, 0.5], "loss val (head)": [1.1, 0.7], "accuracy train (head)": [0.5, 0.7],
                     "loss train (fine_tune)": [0.4], "loss val (fine_tune)": [0.6], "accuracy train (fine_tune)": [0.8]}
    fine_tune = next(line for line in fig.axes[0].get_lines() if line.get_label() == "train (fine_tune)")
    assert list(fine_tune.get_xdata()) == [3]  # its epochs follow the head stage's


def test_a_figure_with_nothing_to_draw_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no stage has a 'loss' history"):
        plots.training_curves([("head", {})])


def test_drawing_a_figure_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    """A notebook's inline backend must survive the package's plots (set to Agg, the notebook lost
    every inline figure drawn after the first of them)."""
    import subprocess
    import sys

    script = (f"import matplotlib; matplotlib.use('svg'); from keras_transfer import plots; "
              f"plots.confusion_matrix([[3, 1], [0, 4]], ['a', 'b'], {str(tmp_path / 'cm.png')!r}); "
              f"print(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "svg"
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
