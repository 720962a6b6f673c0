"""``benchmarks/bench_elpv.py`` chooses by validation only: what its choice rests on, tested on
made-up scores (no training)."""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_elpv  # noqa: E402


@pytest.fixture(autouse=True)
def _archive(tmp_path, monkeypatch):
    """Runs' records are archived next to the results: here, in the test's own folder."""
    monkeypatch.setattr(bench_elpv, "ARCHIVE", str(tmp_path / "archive"))


def _fake_run(runs, candidate, seed, val_right, test_right, seconds, tta_val_right=None):
    """A finished run whose model gets the first ``val_right`` of 10 validation images right (and
    ``test_right`` of 10 test images), plain; with views, ``tta_val_right``. A refit has no
    validation images."""
    out = bench_elpv.run_dir(str(runs), "binary", candidate, seed)
    os.makedirs(out)
    with open(os.path.join(out, "bench_run.json"), "w") as f:
        json.dump({"seconds": seconds, "peak_rss_gib": 1.0}, f)
    labels = np.zeros(10, "int64")

    def probabilities(right, n=10):
        p = np.tile([[0.3, 0.7]], (n, 1))  # wrong: class 1
        p[:right] = [0.7, 0.3]
        return p

    tta = val_right if tta_val_right is None else tta_val_right
    n_val = 0 if candidate in bench_elpv.REFITS else 10
    np.savez(os.path.join(out, "bench_probabilities.npz"), val_labels=labels[:n_val], test_labels=labels,
             val_plain=probabilities(val_right, n_val), val_tta=probabilities(tta, n_val),
             test_plain=probabilities(test_right), test_tta=probabilities(test_right))


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
              "lite1_240_ema_e20_lr15": 20, "lite1_240_ema_e20_mixup": 20, "lite1_240_ema_e20_refit": 20,
              "lite1_240_ema_e20_jitter": 20, "lite1_240_ema_e20_lr6": 20, "lite1_240_ema995_e20": 20,
              "lite1_240_ema_e20_dp": 20, "lite1_240_ema_e20_ord": 20, "lite1_240_ema_e20_l2sp": 20,
              "lite1_240_ema_e20_wu25": 20}
    assert (recipe.fine_tune_epochs, recipe.augment_views, recipe.patience) == (longer.get(candidate, 15), 4, None)
    assert recipe.seed == (11 if candidate == "readme_b" else 1)


@pytest.mark.parametrize("lever, field, value", [("lite1_240_ema_e20_lr6", "fine_tune_learning_rate", 6e-3),
                                                 ("lite1_240_ema995_e20", "ema_momentum", 0.995),
                                                 ("lite1_240_ema_e20_lr15", "fine_tune_learning_rate", 1.5e-3),
                                                 ("lite1_240_ema_e20_dp", "drop_path", 0.2),
                                                 ("lite1_240_ema_e20_l2sp", "l2_sp", 10.0),
                                                 ("lite1_240_ema_e20_wu25", "warmup_fraction", 0.25)])
def test_a_lever_changes_one_field_of_the_chosen_command(lever, field, value):
    """A lever's row is read against the command it varies: everything else must be equal."""
    import dataclasses

    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    def recipe(candidate):
        args = build_parser().parse_args(bench_elpv.command("4class", candidate, 0, "runs/x")[1:])
        return dataclasses.asdict(train_config(args).make_recipe())

    lever_fields, chosen = recipe(lever), recipe("lite1_240_ema_e20")
    assert lever_fields[field] == value != chosen[field]
    assert {k: v for k, v in lever_fields.items() if k != field} == {k: v for k, v in chosen.items() if k != field}
    # the data, backbone and input size too: the two commands differ in that one flag's value, or the
    # lever adds that one flag
    lever_command, chosen_command = [bench_elpv.command("4class", c, 0, "runs/x") for c in (lever, "lite1_240_ema_e20")]
    if len(lever_command) == len(chosen_command):
        assert sum(a != b for a, b in zip(lever_command, chosen_command)) == 1
    else:
        flag = lever_command.index("--" + field.replace("_", "-"))
        assert lever_command[:flag] + lever_command[flag + 2:] == chosen_command


def test_the_ordinal_head_lever_changes_the_head_alone():
    """``lite1_240_ema_e20_ord`` is the chosen command with ``--head ordinal_auxiliary`` added: the
    same recipe, data and backbone, another head."""
    import dataclasses

    from keras_transfer.cli.commands import train_config
    from keras_transfer.cli.entry_point import build_parser

    configs = [train_config(build_parser().parse_args(bench_elpv.command("4class", c, 0, "runs/x")[1:]))
               for c in ("lite1_240_ema_e20_ord", "lite1_240_ema_e20")]
    assert dataclasses.asdict(configs[0].make_recipe()) == dataclasses.asdict(configs[1].make_recipe())
    assert (configs[0].model.head, configs[1].model.head) == ("ordinal_auxiliary", "gap_dense")
    lever, chosen = [bench_elpv.command("4class", c, 0, "runs/x") for c in ("lite1_240_ema_e20_ord", "lite1_240_ema_e20")]
    flag = lever.index("--head")
    assert lever[:flag] + lever[flag + 2:] == chosen


REFIT, BASE = next(iter(bench_elpv.REFITS.items()))


def test_a_refit_is_its_base_command_with_the_validation_images_trained_on():
    refit, base = (bench_elpv.command("4class", c, 2, "runs/x") for c in (REFIT, BASE))
    assert refit[refit.index("--val-split") + 1] == "0" and base[base.index("--val-split") + 1] == "0.1"
    drop = {"--val-split"}
    strip = [[a for i, a in enumerate(cmd) if a not in drop and cmd[i - 1] not in drop] for cmd in (refit, base)]
    assert strip[0] == strip[1]


def test_a_refit_ships_in_place_of_its_chosen_base_whatever_its_test_says(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=7, test_right=9, seconds=600)
        _fake_run(tmp_path, BASE, seed, val_right=8, test_right=8, seconds=900, tta_val_right=9)
        _fake_run(tmp_path, REFIT, seed, val_right=0, test_right=6, seconds=1000)  # worse on test: shipped still
    rows = bench_elpv.choices("binary", ["readme", BASE, REFIT], str(tmp_path))
    refits = [r for r in rows if r.get("refit_of")]
    assert {r["tta"] for r in refits} == {False, True} and all(r["members"] == [REFIT] for r in refits)
    assert next(r for r in refits if r["tta"])["val"] == [0.9] * 3  # its base's, with TTA: it trained on them
    chosen = bench_elpv.choose(rows)
    assert chosen["members"] == [BASE] and chosen["tta"]
    ship = bench_elpv.shipped(rows, chosen)
    assert ship["members"] == [REFIT] and ship["tta"] and ship["test"] == [0.6] * 3
    text = bench_elpv.report("binary", rows, chosen, ship)
    assert "<- shipped" in text and f"shipped: {REFIT}, TTA: test 0.600 / 0.600 / 0.600" in text
    assert "[0.900/0.900/0.900]" in text  # a refit's validation is shown as its base's
    # a refit over the budget is not shipped: its base is
    assert bench_elpv.shipped(rows, chosen, budget=950) is chosen


def test_a_refit_of_a_base_not_chosen_is_not_shipped(tmp_path):
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=10, test_right=7, seconds=600)
        _fake_run(tmp_path, BASE, seed, val_right=8, test_right=8, seconds=900)
        _fake_run(tmp_path, REFIT, seed, val_right=0, test_right=10, seconds=1000)
    rows = bench_elpv.choices("binary", ["readme", BASE, REFIT], str(tmp_path))
    chosen = bench_elpv.choose(rows)
    assert chosen["members"] == ["readme"] and bench_elpv.shipped(rows, chosen) is chosen


def test_a_report_is_made_again_from_the_archive_and_keeps_earlier_rows(tmp_path):
    """Run folders are gitignored and can go: the archive next to the results keeps what the
    report needs, and rows only an earlier report had are kept, marked."""
    import shutil

    runs, out = tmp_path / "runs", tmp_path / "results"
    for seed in bench_elpv.SEEDS:
        _fake_run(runs, "readme", seed, val_right=8, test_right=9, seconds=600)
        bench_elpv.archive("binary", "readme", seed, str(runs))  # what train and score do
    earlier = {"members": ["lite2_260"], "tta": True, "val": [1.0] * 3, "test": [0.5] * 3, "mean_val": 1.0,
               "mean_test": 0.5, "spread_test": 0.0, "seconds": [3600] * 3, "mean_seconds": 3600,
               "peak_rss_gib": [1.0] * 3, "images": {"val": [10] * 3, "test": [10] * 3}}
    os.makedirs(out)
    with open(out / "elpv_protocol_binary.json", "w") as f:
        json.dump({"rows": [earlier], "candidates": {"lite2_260": "..."}}, f)
    shutil.rmtree(runs)
    bench_elpv.main(["--task", "binary", "--candidates", "readme", "--report-only", "--runs", str(runs),
                     "--out", str(out), "--archive", bench_elpv.ARCHIVE])
    with open(out / "elpv_protocol_binary.json") as f:
        result = json.load(f)
    assert {(tuple(r["members"]), r["tta"], bool(r.get("earlier"))) for r in result["rows"]} == {
        (("readme",), False, False), (("readme",), True, False), (("lite2_260",), True, True)}
    assert result["chosen"]["members"] == ["readme"]  # the earlier row is over the budget
    assert set(result["candidates"]) == {"readme", "lite2_260"}
    assert "lite2_260, TTA*" in (out / "elpv_protocol_binary.txt").read_text()


def test_a_report_is_the_same_whichever_candidates_are_named(tmp_path):
    """Its ensembles list their members in one order, so naming another candidate neither renames a
    pair nor keeps the earlier report's copy of it beside the new one."""
    runs, out = tmp_path / "runs", tmp_path / "results"
    for seed in bench_elpv.SEEDS:
        _fake_run(runs, "readme", seed, val_right=8, test_right=9, seconds=600)
        _fake_run(runs, "readme_ema", seed, val_right=7, test_right=8, seconds=600)
    texts = []
    for named in (["readme_ema"], ["readme"], ["readme_ema"]):
        bench_elpv.main(["--task", "binary", "--candidates", *named, "--report-only", "--runs", str(runs),
                         "--out", str(out), "--archive", str(tmp_path / "archive")])
        texts.append((out / "elpv_protocol_binary.txt").read_text())
        rows = json.loads((out / "elpv_protocol_binary.json").read_text())["rows"]
        assert len(rows) == 6 and not any(r.get("earlier") for r in rows)  # 3 lists x TTA on/off, no copies
        assert [r["members"] for r in rows if len(r["members"]) == 2] == [["readme", "readme_ema"]] * 2
    assert texts[0].split("\n")[1:] == texts[1].split("\n")[1:] == texts[2].split("\n")[1:]  # but the date line


def test_a_lever_run_on_some_splits_is_reported_against_the_chosen_row_on_those_splits(tmp_path):
    """A lever stopped after one or two splits is never chosen, but its figures stay in the
    report beside the chosen row's on the same splits (they were written by hand before)."""
    for seed in bench_elpv.SEEDS:
        _fake_run(tmp_path, "readme", seed, val_right=8, test_right=9, seconds=600)
    _fake_run(tmp_path, "lite1_240", 1, val_right=10, test_right=6, seconds=900, tta_val_right=9)
    os.makedirs(bench_elpv.run_dir(str(tmp_path), "binary", "lite2_260", 0))  # still training: no record yet
    rows = bench_elpv.choices("binary", ["readme", "lite1_240"], str(tmp_path))
    chosen = bench_elpv.choose(rows)
    partial = bench_elpv.incomplete("binary", str(tmp_path))
    assert chosen["members"] == ["readme"]  # lite1_240's validation 1.0 on one split does not count
    assert partial == [{"members": ["lite1_240"], "seeds": [1], "val_plain": [1.0], "val_tta": [0.9],
                        "test_plain": [0.6], "test_tta": [0.6], "seconds": [900]}]
    text = bench_elpv.report("binary", rows, chosen, partial=partial)
    assert "lite1_240, seed 1: val 1.000 (0.900) | test 0.600 (0.600) | 15.0 min" in text
    assert "chosen on seed 1: val 0.800 | test 0.900" in text


def test_a_report_scores_every_finished_candidate_not_only_those_named(tmp_path):
    """Naming one candidate to train must not drop the others' rows from the report (a refit's
    rows vanished when it was not named)."""
    runs, out = tmp_path / "runs", tmp_path / "results"
    for seed in bench_elpv.SEEDS:
        _fake_run(runs, "readme", seed, val_right=8, test_right=9, seconds=600)
        _fake_run(runs, "readme_ema", seed, val_right=9, test_right=8, seconds=600)
        _fake_run(runs, "readme_b", seed, val_right=9, test_right=8, seconds=600)
        for candidate in ("readme", "readme_ema"):
            bench_elpv.archive("binary", candidate, seed, str(runs))
    os.remove(bench_elpv.run_dir(str(runs), "binary", "readme_b", 2) + "/bench_run.json")  # two splits only
    bench_elpv.main(["--task", "binary", "--candidates", "readme", "--report-only", "--runs", str(runs),
                     "--out", str(out), "--archive", bench_elpv.ARCHIVE])
    with open(out / "elpv_protocol_binary.json") as f:
        result = json.load(f)
    assert {tuple(r["members"]) for r in result["rows"]} == {("readme",), ("readme_ema",), ("readme", "readme_ema")}
    assert result["chosen"]["members"] == ["readme_ema"] and set(result["candidates"]) == {"readme", "readme_ema"}
    assert [p["members"] for p in result["partial"]] == [["readme_b"]]
