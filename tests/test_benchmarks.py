"""``benchmarks/bench_elpv.py`` chooses by validation only: what its choice rests on, tested on
made-up scores (no training)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_elpv  # noqa: E402


def _fake_run(runs, candidate, seed, val_right, test_right, seconds, tta_val_right=None):
    """A finished run whose model gets the first ``val_right`` of 10 validation images right (and
    ``test_right`` of 10 test images), plain; with views, ``tta_val_right``."""
    out = bench_elpv.run_dir(str(runs), "binary", candidate, seed)
    os.makedirs(out)
    with open(os.path.join(out, "bench_run.json"), "w") as f:
        json.dump({"seconds": seconds, "peak_rss_gib": 1.0}, f)
    labels = np.zeros(10, "int64")

    def probabilities(right):
        p = np.tile([[0.3, 0.7]], (10, 1))  # wrong: class 1
        p[:right] = [0.7, 0.3]
        return p

    tta = val_right if tta_val_right is None else tta_val_right
    np.savez(os.path.join(out, "bench_probabilities.npz"), val_labels=labels, test_labels=labels,
             val_plain=probabilities(val_right), val_tta=probabilities(tta), test_plain=probabilities(test_right),
             test_tta=probabilities(test_right))


def test_the_choice_is_the_best_mean_validation_within_the_budget_whatever_test_says(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=8, test_right=9, seconds=600)
        _fake_run(tmp_path, "lite1_240", seed, val_right=9, test_right=7, seconds=900, tta_val_right=10)
        _fake_run(tmp_path, "lite2_260", seed, val_right=10, test_right=10, seconds=3600)  # over 45 min
    rows = bench_elpv.choices("binary", ["readme", "lite1_240", "lite2_260"], str(tmp_path))
    chosen = bench_elpv.choose(rows)
    assert chosen["members"] == ["lite1_240"] and chosen["tta"]  # validation 1.0 with TTA, test 0.7
    assert chosen["test"] == [0.7, 0.7, 0.7]
    over = [r for r in rows if r["members"] == ["lite2_260"]]
    assert over and all(r["mean_seconds"] > bench_elpv.BUDGET_SECONDS for r in over)
    text = bench_elpv.report("binary", rows, chosen)
    assert "lite1_240, TTA" in text and "<- chosen" in text and "missed by" in text
    assert "10 test, 10 validation images" in text  # the split's own counts


def test_a_tie_on_validation_goes_to_the_cheaper(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=8, test_right=7, seconds=600)
        _fake_run(tmp_path, "lite1_240", seed, val_right=8, test_right=10, seconds=900)
    chosen = bench_elpv.choose(bench_elpv.choices("binary", ["readme", "lite1_240"], str(tmp_path)))
    assert chosen["members"] == ["readme"] and not chosen["tta"]


def test_a_candidate_missing_a_split_is_left_out(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=8, test_right=7, seconds=600)
    _fake_run(tmp_path, "lite1_240", 0, val_right=10, test_right=10, seconds=900)
    rows = bench_elpv.choices("binary", ["readme", "lite1_240"], str(tmp_path))
    assert {tuple(r["members"]) for r in rows} == {("readme",)}
    assert pytest.approx(bench_elpv.choose(rows)["mean_val"]) == 0.8


def test_ensembles_are_of_candidates_at_one_input_size_with_the_mean_of_their_probabilities(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=8, test_right=9, seconds=600)
        _fake_run(tmp_path, "readme_b", seed, val_right=9, test_right=7, seconds=900)
        _fake_run(tmp_path, "lite1_240", seed, val_right=10, test_right=10, seconds=900)
    rows = bench_elpv.choices("binary", ["readme", "readme_b", "lite1_240"], str(tmp_path))
    # 224 and 240 px: `keras-transfer ensemble` refuses them, so the bench never offers them
    assert {tuple(r["members"]) for r in rows} == {("readme",), ("readme_b",), ("lite1_240",), ("readme", "readme_b")}
    pair = next(r for r in rows if r["members"] == ["readme", "readme_b"] and not r["tta"])
    # the mean of 0.7/0.3 rows: image 8 is right for readme_b only (0.5/0.5 ties go to class 0, right)
    assert pair["val"] == [0.9, 0.9, 0.9] and pair["seconds"] == [1500, 1500, 1500]


@pytest.mark.parametrize("candidate", sorted(bench_elpv.CANDIDATES))
def test_every_candidate_is_a_train_command_the_cli_accepts(candidate):
    """A flag mistyped in a candidate would otherwise surface only when its run starts."""
    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    cmd = bench_elpv.command("4class", candidate, 1, "runs/x")
    assert cmd[:2] == ["keras-transfer", "train"]
    recipe = train_config(build_parser().parse_args(cmd[1:])).make_recipe()
    longer = {"readme_e25": 25, "lite1_240_ema_e20": 20, "lite1_240_ema_e25": 25, "lite1_240_ema_e20_cw": 20,
              "lite1_240_ema_e20_lr15": 20, "lite1_240_ema_e20_mixup": 20}
    assert (recipe.fine_tune_epochs, recipe.augment_views, recipe.patience) == (longer.get(candidate, 15), 4, None)
    assert recipe.seed == (11 if candidate == "readme_b" else 1)
