import numpy as np

from keras_transfer import plots


def test_misclassified_shows_the_most_confident_mistakes_first(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, 8, 8, 3)).astype("uint8")
    labels = np.array([0, 1, 0, 1, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.95, 0.05], [0.2, 0.8], [0.5, 0.5]])
    shown = plots.misclassified(images, labels, probs, ["cat", "dog"], str(tmp_path / "m.png"), max_images=2)
    assert [r["index"] for r in shown] == [3, 4]  # wrong: 2 (0.6), 3 (0.95), 4 (0.8); the top two shown
    assert shown[0] == {"index": 3, "true": "dog", "predicted": "cat", "probability": 0.95, "name": None}
    assert (tmp_path / "m.png").stat().st_size > 3000


def test_misclassified_with_no_mistakes_still_draws(tmp_path):
    shown = plots.misclassified(np.zeros((2, 4, 4, 3), "uint8"), [0, 1], [[1, 0], [0, 1]], ["a", "b"],
                                str(tmp_path / "m.png"))
    assert shown == [] and (tmp_path / "m.png").exists()


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
