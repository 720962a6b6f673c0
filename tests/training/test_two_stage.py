"""``fine_tune``: both stages, resumable after a kill."""

import json
import os

import keras
import numpy as np
import pytest
from training_helpers import small_recipe, small_splits, small_vgg

from keras_transfer import training


class _Kill(keras.callbacks.Callback):
    """Stands in for SIGKILL: stop training after ``n`` epochs in all (across stages)."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_epoch_end(self, epoch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            raise KeyboardInterrupt


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, rng):
    run = str(tmp_path / "run")
    s = small_splits(rng)
    recipe = small_recipe(head_epochs=2, fine_tune_epochs=3)
    keras.utils.set_random_seed(0)
    with pytest.raises(KeyboardInterrupt):
        training.fine_tune(small_vgg(), s, recipe, run_dir=run, callbacks=[_Kill(4)])  # 2 head epochs, dies after fine-tune epoch 2
    state = json.load(open(os.path.join(run, "state.json")))
    assert state["head"] == "done" and "fine_tune" not in state
    assert os.path.exists(os.path.join(run, "backup", "fine_tune", "latest.weights.h5"))
    model = small_vgg()
    histories = training.fine_tune(model, s, recipe, run_dir=run, resume=True)
    assert "head" not in histories  # finished stage loaded, not retrained
    assert len(histories["fine_tune"]["loss"]) == 1  # epochs 1-2 restored, only epoch 3 ran
    state = json.load(open(os.path.join(run, "state.json")))
    assert state["head"] == state["fine_tune"] == "done"
    assert not os.path.exists(os.path.join(run, "backup", "fine_tune"))
    assert len(open(os.path.join(run, "fine_tune.csv")).read().splitlines()) == 1 + 3


def test_a_run_started_before_the_kept_epoch_rule_resumes_with_the_head_loss_it_recorded(rng, tmp_path):
    """state.json of an earlier version holds only head_val_loss: fine-tuning is still judged against it."""
    import json

    from keras_transfer.training import two_stage

    state = two_stage._StageState(str(tmp_path), resume=False)
    state.values["head_val_loss"] = 0.30
    model = small_vgg()
    before = [w.copy() for w in model.get_weights()]
    history = {"val_loss": [0.50], "val_accuracy": [0.9]}  # fine-tuning ended worse than the head
    model.set_weights([w + 1 for w in before])
    two_stage._keep_best(model, "fine_tune", history, small_recipe(patience=3), state, before)
    assert history["kept_head_weights"] is True
    np.testing.assert_array_equal(model.get_weights()[0], before[0])
    json.dumps(state.values)  # what is written to state.json stays JSON
