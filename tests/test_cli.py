import os
import subprocess
import sys

from keras_transfer.cli import main


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
