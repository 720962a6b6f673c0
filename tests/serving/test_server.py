"""keras-transfer serve, over real HTTP on loopback: TF Serving's REST API for an export."""
import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from helpers import free_port, headless_chromium, wait_for_port
from PIL import Image

from keras_transfer import export, training
from keras_transfer.serving import rest

CLASSES = ["les_paul", "sg", "stratocaster"]


def _model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return training.build_model("vgg16", 3, weights=None, input_size=32, removed=3, width=8)


def _call(port, path, body=None):
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data), timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    out = str(root / "guitars" / "export")
    export.export(_model(0), out, CLASSES)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "keras_transfer", "serve", out, "--port", str(port),
                             "--poll-seconds", "0.2", "--max-body-mb", "1", "--enable-batching"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc)
        yield port, out, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _png(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_status_and_metadata_name_the_served_version_and_its_signatures(served):
    port, _, _ = served
    status, body = _call(port, "/v1/models/guitars")
    assert status == 200 and body["model_version_status"][0]["version"] == "1"
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    status, meta = _call(port, "/v1/models/guitars/metadata")
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "serve_bytes", "explain"} <= set(sigs)
    assert sigs["serve_bytes"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert sigs["serving_default"]["inputs"]["images"]["dtype"] == "DT_UINT8"


def test_rows_columns_and_b64_answer_as_the_savedmodel_does(served):
    port, out, _ = served
    pixels = np.random.default_rng(1).integers(0, 256, (3, 40, 30, 3), dtype=np.uint8)
    saved = tf.saved_model.load(export.resolve(out)).signatures
    want = saved["serving_default"](images=tf.constant(pixels))["probabilities"].numpy()
    status, rows = _call(port, "/v1/models/guitars:predict", {"instances": pixels.tolist()})
    assert status == 200
    np.testing.assert_allclose([p["probabilities"] for p in rows["predictions"]], want, atol=1e-6)
    assert [p["class_names"] for p in rows["predictions"]] == [CLASSES[i] for i in want.argmax(1)]
    status, cols = _call(port, "/v1/models/guitars/versions/1:predict", {"inputs": {"images": pixels.tolist()}})
    np.testing.assert_allclose(cols["outputs"]["probabilities"], want, atol=1e-6)
    files = [_png(p) for p in pixels]
    want_bytes = saved["serve_bytes"](images=tf.constant(files))["probabilities"].numpy()
    b64 = [{"b64": base64.b64encode(f).decode()} for f in files]
    status, rows = _call(port, "/v1/models/guitars:predict", {"signature_name": "serve_bytes", "instances": b64})
    np.testing.assert_allclose([p["probabilities"] for p in rows["predictions"]], want_bytes, atol=1e-6)
    status, cols = _call(port, "/v1/models/guitars:predict", {"signature_name": "serve_bytes", "inputs": b64})
    np.testing.assert_allclose(cols["outputs"]["probabilities"], want_bytes, atol=1e-6)


@pytest.mark.parametrize("body, status, says", [
    (b"{not json", 400, "not JSON"),
    ({"instances": [{"b64": "!!!"}], "signature_name": "serve_bytes"}, 400, "base64"),
    ({"instances": [{"b64": base64.b64encode(b"hello").decode()}], "signature_name": "serve_bytes"}, 400, "image"),
    ({"instances": [[[[1, 2, 3]]]], "signature_name": "nope"}, 400, "no signature 'nope'"),
    ({"instances": [[[[300, 0, 0]]]]}, 400, "0..255"),
    ({"instances": [[[[1, 2, 3]]], [[[1, 2, 3], [4, 5, 6]]]]}, 400, "same shape"),
    ({"instances": [[1, 2]]}, 400, "shape"),
    ({"nothing": 1}, 400, "'instances'"),
    (b"x" * (2 << 20), 413, "larger than this server accepts"),
])
def test_a_bad_request_gets_an_error_and_the_server_goes_on(served, body, status, says):
    port, _, _ = served
    got, answer = _call(port, "/v1/models/guitars:predict", body)
    assert got == status and says in answer["error"]
    ok, answer = _call(port, "/v1/models/guitars:predict", {"instances": [[[[1, 2, 3]]]]})
    assert ok == 200 and len(answer["predictions"]) == 1


def test_a_decompression_bomb_is_refused_from_its_header_and_the_server_goes_on(served, tmp_path):
    from helpers import write_bomb_png

    port, _, _ = served
    bomb = open(write_bomb_png(str(tmp_path / "bomb.png")), "rb").read()  # 30000 x 30000 declared, 90 bytes
    body = {"signature_name": "serve_bytes", "instances": [{"b64": base64.b64encode(bomb).decode()}]}
    status, answer = _call(port, "/v1/models/guitars:predict", body)
    assert status == 400 and "more pixels than this model decodes" in answer["error"]
    status, answer = _call(port, "/page/explain", bomb)
    assert status == 400 and "pixels" in answer["error"]
    ok, answer = _call(port, "/v1/models/guitars:predict", {"instances": [[[[1, 2, 3]]]]})
    assert ok == 200 and len(answer["predictions"]) == 1


def test_unknown_model_or_version_is_404(served):
    port, _, _ = served
    assert _call(port, "/v1/models/other:predict", {"instances": [[[[1, 2, 3]]]]})[0] == 404
    assert _call(port, "/v1/models/guitars/versions/9")[0] == 404


def test_page_explain_route_gives_top_classes_and_an_overlay(served):
    port, out, _ = served
    pixels = np.random.default_rng(2).integers(0, 256, (50, 40, 3), dtype=np.uint8)
    status, answer = _call(port, "/page/explain", _png(pixels))
    want = export.Predictor(out).predict_images(pixels[None])["probabilities"][0]
    assert status == 200 and answer["classes"][0]["name"] == CLASSES[int(want.argmax())]
    assert answer["classes"][0]["probability"] == pytest.approx(float(want.max()), abs=1e-5)
    assert answer["overlay"].startswith("data:image/png;base64,")
    assert _call(port, "/page/explain", b"not an image")[0] == 400
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as page:
        assert "guitars" in page.read().decode()


def test_a_new_version_folder_is_served_without_a_restart(served):
    port, out, _ = served
    pixels = np.random.default_rng(3).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    new = export.export(_model(7), out, CLASSES)
    want = tf.saved_model.load(new).signatures["serving_default"](images=tf.constant(pixels))["probabilities"].numpy()
    deadline = time.time() + 60
    while _call(port, "/v1/models/guitars")[1]["model_version_status"][0]["version"] != "2":
        assert time.time() < deadline, "version 2 was not picked up"
        time.sleep(0.2)
    status, rows = _call(port, "/v1/models/guitars:predict", {"instances": pixels.tolist()})
    np.testing.assert_allclose(rows["predictions"][0]["probabilities"], want[0], atol=1e-6)


def test_rest_parses_named_rows_and_refuses_mixed_keys():
    specs = {"images": {"dtype": "DT_UINT8", "shape": [None, None, None, 3]}}
    arrays, rows = rest.inputs({"instances": [{"images": [[[1, 2, 3]]]}]}, specs)
    assert rows and arrays["images"].dtype == np.uint8 and arrays["images"].shape == (1, 1, 1, 3)
    with pytest.raises(rest.BadRequest, match="exactly one"):
        rest.inputs({"instances": [], "inputs": []}, specs)
    assert rest.response({"a": np.array([1, 2])}, rows=True) == {"predictions": [1, 2]}
    assert rest.response({"a": np.array([b"\xff"], dtype=object)}, rows=False) == {"outputs": [{"b64": "/w=="}]}


def test_serve_refuses_bad_options(tmp_path):
    from keras_transfer import cli

    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", str(tmp_path), "--port", "70000"])
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["serve", str(tmp_path), "--model-name", "a/b"])
    assert cli.main(["serve", str(tmp_path), "--max-batch-size", "8"]) == 2
    assert cli.main(["serve", str(tmp_path)]) == 2  # no export there: one line, no traceback


def test_the_page_in_a_real_browser_shows_the_served_answer(served, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port, out, _ = served
    pixels = np.random.default_rng(5).integers(0, 256, (60, 50, 3), dtype=np.uint8)
    image = tmp_path / "photo.png"
    image.write_bytes(_png(pixels))
    want = export.Predictor(out).predict_images(pixels[None])["probabilities"][0]
    driver = headless_chromium()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "file").send_keys(str(image))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-answered"))
        assert driver.find_element(By.ID, "error").text == ""
        first = driver.find_elements(By.CSS_SELECTOR, "#classes li")[0]
        assert first.get_attribute("data-class") == CLASSES[int(want.argmax())]
        assert float(first.get_attribute("data-probability")) == pytest.approx(float(want.max()), abs=1e-5)
        assert f"{100 * want.max():.1f} %" in first.text
        assert driver.find_element(By.ID, "overlay").get_attribute("src").startswith("data:image/png;base64,")
        bad = tmp_path / "notes.png"
        bad.write_bytes(b"not an image at all")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "error").text)
        assert "notes.png" in driver.find_element(By.ID, "error").text
    finally:
        driver.quit()


@pytest.mark.parametrize("batching", [False, True])
def test_predict_with_and_without_batching_gives_the_signatures_answer(served, batching):
    import asyncio

    from keras_transfer.serving import server

    _, out, _ = served
    model = server.ModelServer(out, "guitars", batching=batching, max_batch_size=4)
    pixels = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    want = model.current.run("serving_default", {"images": pixels})["probabilities"]

    async def main():
        try:
            return await asyncio.gather(*(model.predict(model.current, "serving_default", {"images": pixels})
                                          for _ in range(3)))
        finally:
            await model.close()

    for got in asyncio.run(main()):
        np.testing.assert_allclose(got["probabilities"], want, atol=1e-6)


def test_the_console_shows_the_servers_lines_not_tensorflows_native_log(served):
    # A SavedModel's first call logs grappler's "E0000 ... layout failed" (harmless, and alarming
    # to read) to file descriptor 2; off --verbose the CLI keeps TensorFlow's native log quiet.
    import re

    _, out, _ = served
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    proc = subprocess.Popen([sys.executable, "-m", "keras_transfer", "serve", out, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for_port(port, proc)
        pixels = np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8)
        b64 = {"b64": base64.b64encode(_png(pixels)).decode()}
        assert _call(port, "/v1/models/guitars:predict", {"signature_name": "serve_bytes", "instances": [b64]})[0] == 200
        assert _call(port, "/v1/models/guitars:predict", {"instances": [pixels.tolist()]})[0] == 200
    finally:
        proc.terminate()
        said = proc.communicate(timeout=30)[0]
    assert "serving guitars version" in said
    assert not re.findall(r"^[IWEF]\d{4} .*$", said, re.M)
