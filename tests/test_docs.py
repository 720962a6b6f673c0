"""The documentation as a reader follows it: every command shown parses with the real parser,
README's Python quickstart and its offline command sequence run as shown (at smaller sizes),
and the built site shows the tutorial and the learner's reference."""

import glob
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from helpers import free_port, headless_chromium

ROOT = os.path.dirname(os.path.dirname(__file__))
README = os.path.join(ROOT, "README.md")
DOC_FILES = [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))


def shown_commands(text: str) -> list[str]:
    """Each ``keras-transfer ...`` command in the fenced code blocks of a Markdown text: line
    continuations joined, comments, pipes, redirections and ``&`` cut off."""
    commands = []
    for block in _shell_blocks(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                line = line[2:]
            if not line.startswith("keras-transfer "):
                continue
            line = re.split(r"\s+#\s", line)[0]
            line = re.split(r"\s[|&>]\s?|\s&$", line + " ")[0].strip()
            commands.append(line)
    return commands


def _shell_blocks(text: str) -> list[str]:
    """The contents of the fenced blocks marked bash, sh or console (or unmarked)."""
    blocks, current = [], None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and current is None:
            current = [] if fence.group(1) in ("", "bash", "sh", "console") else False
        elif fence:
            if current is not False:
                blocks.append("\n".join(current) + "\n")
            current = None
        elif current:
            current.append(line)
        elif current == []:
            current.append(line)
    return blocks


def parse_errors(commands: list[str]) -> list[str]:
    """The commands the real parser refuses, each with argparse's reason."""
    from keras_transfer.cli.entry_point import build_parser

    parser, refused = build_parser(), []
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit:
            refused.append(command)
    return refused


def test_every_command_shown_in_readme_and_the_docs_parses(capsys):
    commands = {path: shown_commands(open(path).read()) for path in DOC_FILES}
    assert len(commands[README]) >= 9 and sum(map(len, commands.values())) >= 15
    refused = {os.path.relpath(path, ROOT): parse_errors(shown) for path, shown in commands.items()}
    assert {path: bad for path, bad in refused.items() if bad} == {}, capsys.readouterr().err[-2000:]


def test_the_command_check_refuses_a_misspelled_flag(capsys):
    text = "```bash\nkeras-transfer train --data d --hed-epochs 1   # a typo\nkeras-transfer train --data d\n```\n"
    assert shown_commands(text) == ["keras-transfer train --data d --hed-epochs 1", "keras-transfer train --data d"]
    assert parse_errors(shown_commands(text)) == ["keras-transfer train --data d --hed-epochs 1"]
    assert "unrecognized arguments: --hed-epochs" in capsys.readouterr().err


def _python_quickstart() -> str:
    block = re.search(r"## From Python\n+```python\n(.*?)```", open(README).read(), re.S)
    assert block, "README has no Python quickstart"
    return block.group(1)


def test_readmes_python_quickstart_runs_as_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _python_quickstart()
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    namespace = {}
    exec(compile(code, "README.md quickstart", "exec"), namespace)  # noqa: S102 - README's own code
    assert 0.0 <= namespace["learner"].evaluate()["accuracy"] <= 1.0
    assert os.path.exists(os.path.join(namespace["version"], "model.tflite"))


# README's sizes are for a person; the test runs the same lines smaller
SMALLER = [(r"--input-size \d+", "--input-size 32"), (r"--trials \d+", "--trials 2"),
           (r"^(keras-transfer sample-data guitars \S+)", r"\1 --n-per-class 6"),
           (r"^(keras-transfer (train|tune) .*)$", r"\1 --head-epochs 1 --fine-tune-epochs 1")]


@pytest.mark.slow
def test_readmes_offline_command_sequence_runs_in_order(tmp_path, monkeypatch, capsys):
    from keras_transfer.cli.entry_point import main

    monkeypatch.chdir(tmp_path)
    block = open(README).read().split("## Command line, offline, in order", 1)[1].split("## ", 1)[0]
    commands = shown_commands(block)
    assert [c.split()[1] for c in commands] == ["sample-data", "inspect", "probe", "train", "predict", "explain",
                                               "export", "tune", "serve"]
    said = {}
    for command in commands[:-1]:
        for pattern, replacement in SMALLER:
            command = re.sub(pattern, replacement, command)
        assert main(shlex.split(command)[1:]) == 0, command
        said[command.split()[1]] = capsys.readouterr().out
    # what the reader sees: predict ranks the guitar classes for each sg image, explain draws a figure per
    # image, and the TFLite file export wrote answers as the SavedModel does
    import numpy as np
    from PIL import Image

    from keras_transfer import export

    rows = [line.split("\t") for line in said["predict"].splitlines() if line.startswith("data/guitars/sg/")]
    assert len(rows) == 6 and all(row[1] in ("les_paul", "sg", "stratocaster") and len(row) == 5 for row in rows)
    figure = said["explain"].split("\t")[-1].strip()
    assert figure.startswith("runs/gradcam/") and os.path.getsize(figure) > 5000
    served = export.Predictor("runs/guitars/export/2")
    images = np.stack([np.asarray(Image.open(f"data/guitars/sg/sg_000{i}.jpg")) for i in range(2)])
    np.testing.assert_allclose(served.predict_tflite(images), served.predict_images(images)["probabilities"],
                               atol=1e-3)
    # the last line serves what `train` exported; README's curl asks its metadata
    import requests

    port = free_port()
    serve = shlex.split(commands[-1].replace("--port 8501", f"--port {port}"))[1:]
    server = subprocess.Popen([sys.executable, "-m", "keras_transfer", *serve], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = re.search(r"curl -s localhost:8501(\S+)", open(README).read()).group(1)
        for _ in range(120):
            try:
                answer = requests.get(f"http://127.0.0.1:{port}{url}", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert answer.status_code == 200 and "serving_default" in answer.text
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mkdocs"), "build", "--strict", "--quiet",
                           "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_built_site_shows_the_tutorial_and_the_learners_reference(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    try:
        driver.get(f"file://{site}/index.html")
        assert "keras-transfer" in driver.title
        driver.find_element(By.PARTIAL_LINK_TEXT, "tutorial").click()
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "A guitar classifier by transfer learning" in body and "kt.Learner(" in body
        assert driver.find_elements(By.CSS_SELECTOR, "img[src^='data:image/']")  # the figures, inline
        driver.get(f"file://{site}/reference/api.html")
        # on a loaded machine the page's headings can be read before they are there (CI once saw none)
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "h2, h3"))
        headings = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h2, h3")]
        assert any(h.endswith("Learner") for h in headings), headings[:20]
        api = driver.find_element(By.TAG_NAME, "body").text
        assert "fine_tune" in api
        assert not re.search(r":(class|func|meth|mod|data):`", api)  # Sphinx roles shown as code, not as typed
        driver.get(f"file://{site}/reference/cli.html")
        assert "--head-epochs" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
