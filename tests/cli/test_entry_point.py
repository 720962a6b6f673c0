import os
import subprocess
import sys

import pytest

from keras_transfer.cli.entry_point import main


def test_inspect_inception_lists_the_eleven_mixed_cut_points(capsys):
    assert main(["inspect", "--backbone", "inception_v3", "--input-size", "75", "--weights", "none"]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 311
    mixed_units = [cols[1] for cols in lines if cols[1].startswith("mixed") and "U" in cols]
    assert mixed_units == [f"mixed{i}" for i in range(11)]
    mixed9_0 = next(cols for cols in lines if cols[1] == "mixed9_0")
    assert "*" not in mixed9_0
    assert "11 units (mixed0 … mixed10)" in out


def test_inspect_errors_are_clear(capsys):
    assert main(["inspect", "--backbone", "vgg16", "--input-size", "16"]) == 2
    assert "at least 32x32" in capsys.readouterr().err


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    assert os.path.exists(exe), "pip install -e . installs the keras-transfer console script"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "inspect" in out.stdout
    out = subprocess.run([exe, "inspect", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "--cut-points-only" in out.stdout


def test_inspect_draws_first_layer_filters(tmp_path, capsys):
    png = tmp_path / "filters.png"
    assert main(["inspect", "--backbone", "vgg16", "--input-size", "32", "--weights", "hed", "--filters", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "64 filters of block1_conv1" in capsys.readouterr().out


# a value other than the default for options whose type alone does not say what is valid
_VALUES = {"--weights": ["hed"], "--frozen": ["block3_pool"], "--removed": ["3"], "--removed-range": ["1:2"], "--frozen-range": ["9:12"], "--devices": ["/cpu:0,/cpu:1"],
           "--data": ["some/folder"], "--patience": ["-1"], "--precision": ["float32"], "--widths": ["64"], "--dropouts": ["0.3"],
           "--learning-rates": ["0.01"], "--b-per-class": ["5"], "--a-classes": ["0,1"], "--jitter": ["0.05"]}


def _other_value(action):
    """Arguments that set ``action`` to something other than its default."""
    if action.option_strings[0] == "--weights" and action.default == "hed":
        return ["none"]
    if action.option_strings[0] in _VALUES:
        return _VALUES[action.option_strings[0]]
    if action.nargs == 0:  # store_true
        return []
    if action.choices:
        default = action.default[0] if isinstance(action.default, list) else action.default
        return [next(c for c in action.choices if c != default)]
    kind = getattr(action.type, "kind", action.type)  # config.ranged types carry theirs
    return ["7"] if kind is int else ["0.37"] if kind is float else ["x"]


def _subparser(name):
    import argparse

    from keras_transfer.cli.entry_point import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


COMMANDS = ["train", "tune", "experiment layer-removal", "experiment transferability", "experiment keep-classifier",
            "experiment binary-aux"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_reaches_the_config(command):
    """Walk the command's parser: setting any option to a non-default value changes its config
    (or is one of the few options the command itself uses), so nothing is silently dropped."""
    import dataclasses

    from keras_transfer.cli import commands, experiments

    name, _, experiment = command.partition(" ")
    build = {"train": commands.train_config, "tune": commands.search_config,
             "experiment": experiments.experiment_config}[name]
    parser = _subparser(name)
    positional = [experiment] if experiment else []
    if experiment:  # the experiment's own sub-parser holds its options
        parser = next(a for a in parser._actions if a.dest == "name").choices[experiment]
        positional = []

    def parse(argv):
        return _subparser(name).parse_args([experiment, *argv]) if experiment else parser.parse_args(argv)

    base_argv = positional + ["--dataset", "digits"]
    baseline = dataclasses.asdict(build(parse(base_argv)))
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) > 8
    for action in options:
        flag = action.option_strings[0]
        argv = (positional if flag in ("--data", "--dataset") else base_argv) + [flag, *_other_value(action)]
        if flag == "--dataset":
            argv = positional + ["--dataset", "elpv"]
        args = parse(argv)
        if action.dest in commands.RUN_OPTIONS[name]:
            assert getattr(args, action.dest) != action.default
            continue
        changed = {k for k, v in dataclasses.asdict(build(args)).items() if v != baseline[k]}
        assert changed, f"{command} {flag} is accepted but reaches nothing in the config"


def test_tune_refuses_options_it_cannot_apply(capsys):
    with pytest.raises(SystemExit):
        _subparser("tune").parse_args(["--dataset", "digits", "--include-top"])
    assert "--include-top" in capsys.readouterr().err


def test_help_answers_without_importing_tensorflow():
    code = ("import sys\nfrom keras_transfer.cli.entry_point import main\n"
            "for argv in (['--help'], ['train', '--help'], ['predict', '--help'], ['experiment', 'binary-aux', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        assert e.code == 0, argv\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("command", ["train", "tune", "probe", "export", "predict", "explain", "sample-data", "inspect"])
def test_every_command_says_what_it_does(command):
    parser = _subparser(command)
    assert parser.description and len(parser.description) > 40, command
    assert "--verbose" in parser.format_help()


def test_tensorflow_start_up_lines_are_hidden_unless_verbose(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "keras-transfer")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    argv = [exe, "inspect", "--backbone", "vgg16", "--input-size", "32", "--weights", "none", "--cut-points-only"]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    native = ("I0000", "E0000", "W0000", "absl::InitializeLog", "cuInit", "oneDNN custom operations")
    assert not [line for line in quiet.stderr.splitlines() if any(m in line for m in native)], quiet.stderr
    assert "block5_pool" in quiet.stdout
    loud = subprocess.run(argv + ["--verbose"], capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == 0 and "block5_pool" in loud.stdout
    assert any(m in loud.stderr for m in native)  # there were lines to hide


def test_the_offered_names_are_the_tables():
    from keras_transfer._utils import choices
    from keras_transfer.models import backbones, heads
    from keras_transfer.training import recipes

    assert choices.BACKBONES == tuple(backbones.BACKBONES)
    assert choices.HEADS == tuple(heads.HEADS)
    assert choices.AUXILIARY_HEADS == tuple(heads.AUXILIARY_OUTPUTS)
    assert choices.RECIPES == tuple(recipes.RECIPES)
