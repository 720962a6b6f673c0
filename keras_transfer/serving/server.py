"""``keras-transfer serve``: an export behind TF Serving's REST API, and a page to try it.

Routes (tensorflow/serving ``g3doc/api_rest.md``; ``NAME`` is ``--model-name``):

- ``GET /v1/models/NAME[/versions/V]``: the version's status (``model_version_status``);
- ``GET /v1/models/NAME[/versions/V]/metadata``: its signatures (``signature_def``, as TF Serving
  gives them, read from ``saved_model.pb``);
- ``POST /v1/models/NAME[/versions/V]:predict``: rows or columns, see :mod:`keras_transfer.serving.rest`;
- ``GET /``: a page where a person picks or drops an image and sees the top classes and the
  Grad-CAM overlay, from ``POST /page/explain`` (the file's bytes).

As TF Serving does, the highest version folder in the export is served, and a newer one is
loaded while the old one answers, then swapped in, without a restart (the folder is polled).
An export's version appears whole (``export`` renames it into place). Every bad request is
answered 4xx with ``{"error": ...}``; bodies above ``max_body_bytes`` get 413 before they are
read whole, and an image file above ``images.MAX_PIXELS`` is refused by its header.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import logging
import os
import re
from importlib import resources

import numpy as np
import tensorflow as tf
from aiohttp import web
from google.protobuf import json_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from keras_transfer import export
from keras_transfer.data import images
from keras_transfer.export import heatmaps
from keras_transfer.serving import rest
from keras_transfer.serving.request_batching import Batcher

logger = logging.getLogger(__name__)

_PATH = re.compile(r"(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<metadata>/metadata)?(?::(?P<verb>\w+))?")


class Refused(Exception):
    """A request answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Version:
    """One loaded version folder: its signatures, their input specs and their SignatureDefs."""

    def __init__(self, path: str):
        self.path = path
        folder = os.path.basename(os.path.normpath(path))
        self.number = int(folder) if folder.isdigit() else 1
        self.predictor = export.Predictor(path)
        self.signatures = dict(self.predictor.saved_model.signatures)
        self.specs = {
            name: {k: {"dtype": types_pb2.DataType.Name(s.dtype.as_datatype_enum),
                       "shape": None if s.shape.rank is None else list(s.shape.as_list())}
                   for k, s in fn.structured_input_signature[1].items()}
            for name, fn in self.signatures.items()}
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(self.predictor.path, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        self.signature_defs = {
            k: json_format.MessageToDict(v, preserving_proto_field_name=True)
            for k, v in saved.meta_graphs[0].signature_def.items() if k in self.signatures}
        self.batchers: dict[str, Batcher] = {}

    def run(self, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Call one signature (blocking); TensorFlow's refusals become :class:`rest.BadRequest`."""
        try:
            out = self.signatures[signature](**{k: tf.constant(v) for k, v in arrays.items()})
        except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError, ValueError, TypeError) as err:
            raise rest.BadRequest(tensorflow_reason(err)) from None
        return {k: v.numpy() for k, v in out.items()}


def tensorflow_reason(err: Exception) -> str:
    """The sentence of a TensorFlow error a client can act on (no node names, no stack)."""
    text = getattr(err, "message", None) or str(err)
    skip = ("[[", "Detected at", "Graph execution error", "<stack traces unavailable>", "File ")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    found = next((ln for ln in lines if "assertion failed" in ln), lines[0] if lines else "")
    found = re.sub(r"\{\{function_node [^}]*\}\}|\s*\[Op:[^\]]*\].*$", "", found)
    found = re.sub(r"^assertion failed: ", "", found).replace("] [", " ").strip("[] ")
    return found[:500] or type(err).__name__


@functools.cache
def _decoder():
    return tf.function(images.decode_bytes, input_signature=[tf.TensorSpec([], tf.string)])


def decode_upload(encoded: bytes) -> np.ndarray:
    """``serve_bytes``' decoding of one file, as a compiled function (its errors read as the signature's)."""
    return _decoder()(tf.constant(encoded)).numpy()


class ModelServer:
    """The versions of one export, the newest loaded, and the calls into it.

    Args:
        export_dir: an export folder (its numbered versions are watched) or one version folder.
        name: the model's name in the URLs.
        batching: join concurrent predict requests (see :mod:`keras_transfer.serving.request_batching`).
        max_batch_size, batch_timeout: the batches' bounds (examples, seconds).
        poll_seconds: how often the export folder is checked for a new version.
    """

    def __init__(self, export_dir: str, name: str, batching: bool = False, max_batch_size: int = 32,
                 batch_timeout: float = 0.002, poll_seconds: float = 1.0, threads: int = 2):
        self.export_dir, self.name = os.path.abspath(export_dir), name
        self.batching, self.max_batch_size, self.batch_timeout = batching, max_batch_size, batch_timeout
        self.poll_seconds = poll_seconds
        self.fixed = os.path.exists(os.path.join(self.export_dir, "saved_model.pb"))  # one version folder
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model")
        self.failed: set[str] = set()
        self.current = Version(export.resolve(self.export_dir))  # errors here stop the start
        logger.debug("serving %s version %d from %s", name, self.current.number, self.current.path)

    def newest_path(self) -> str | None:
        if self.fixed:
            return None
        versions = export.versions(self.export_dir)
        return os.path.join(self.export_dir, str(versions[-1])) if versions else None

    async def watch(self) -> None:
        """Load each newer version as it appears and swap it in; a version that fails to load
        is logged once and the current one goes on answering."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.poll_seconds)
            path = self.newest_path()
            if path is None or path in self.failed or int(os.path.basename(path)) <= self.current.number:
                continue
            try:
                version = await loop.run_in_executor(self.executor, Version, path)
            except Exception as err:  # noqa: BLE001 - a bad new version must not stop the server
                self.failed.add(path)
                logger.error("version %s could not be loaded, still serving version %d: %s",
                             path, self.current.number, str(err).splitlines()[0])
                continue
            old, self.current = self.current, version
            logger.info("now serving %s version %d (was %d)", self.name, version.number, old.number)
            for batcher in old.batchers.values():
                await batcher.close()

    def version(self, name: str, number: str | None) -> Version:
        """The version a URL asks for: only the served one exists, as in TF Serving's latest policy."""
        current = self.current
        if name != self.name or (number is not None and int(number) != current.number):
            wanted = f"Specific({name}, {number})" if number is not None else f"Latest({name})"
            raise Refused(404, f"Servable not found for request: {wanted}; this server serves "
                               f"model '{self.name}' version {current.number}")
        return current

    async def predict(self, version: Version, signature: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def run(a):
            return version.run(signature, a)

        if not self.batching:
            return await asyncio.get_running_loop().run_in_executor(self.executor, run, arrays)
        batcher = version.batchers.get(signature)
        if batcher is None:
            batcher = version.batchers[signature] = Batcher(run, self.executor, self.max_batch_size, self.batch_timeout)
        return await batcher(arrays)

    def explain_bytes(self, encoded: bytes, top: int = 5) -> dict:
        """The page's answer for one image file (blocking): top classes, and a Grad-CAM overlay
        where the export has an ``explain`` signature."""
        version = self.current
        try:
            pixels = decode_upload(encoded)
        except (tf.errors.InvalidArgumentError, ValueError) as err:
            raise rest.BadRequest(f"the file is not an image this model can decode: {tensorflow_reason(err)}") from None
        if "explain" in version.signatures:
            out = version.run("explain", {"images": pixels[None]})
        else:
            out = version.run("serving_default", {"images": pixels[None]})
        probs = out["probabilities"][0]
        order = np.argsort(-probs)[:top]
        answer = {"model": self.name, "version": version.number,
                  "classes": [{"name": version.predictor.class_names[i], "probability": float(probs[i])} for i in order]}
        if "heatmaps" in out:
            shown = images.resize_array(pixels[None], _display_size(pixels.shape[:2]))[0].round().astype("uint8")
            png = tf.io.encode_png(heatmaps.overlay(shown, out["heatmaps"][0])).numpy()
            answer["overlay"] = "data:image/png;base64," + base64.b64encode(png).decode()
        return answer

    async def close(self) -> None:
        for batcher in self.current.batchers.values():
            await batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _display_size(hw, longest: int = 384) -> tuple[int, int]:
    scale = min(1.0, longest / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _json_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except rest.BadRequest as err:
        return _error(400, str(err))
    except Refused as err:
        return _error(err.status, str(err))
    except web.HTTPRequestEntityTooLarge as err:
        return _error(413, f"the body is larger than this server accepts ({err.text}); "
                           "send fewer or smaller images, or start the server with a larger --max-body-mb")
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return _error(err.status, f"{err.reason}: {request.method} {request.path}")
    except Exception:  # noqa: BLE001 - one request's fault must not stop the server
        logger.exception("error answering %s %s", request.method, request.path)
        return _error(500, "the server failed on this request (see its log)")


def _parse(request: web.Request) -> dict:
    match = _PATH.fullmatch(request.match_info["rest"])
    if not match:
        raise Refused(404, f"no such route: {request.path}; the API is /v1/models/NAME[/versions/V][/metadata|:predict]")
    return match.groupdict()


async def _get(request: web.Request) -> web.Response:
    server: ModelServer = request.app["server"]
    parts = _parse(request)
    if parts["verb"]:
        raise Refused(405, f"{request.path} takes POST (a predict request). Received: GET")
    version = server.version(parts["name"], parts["version"])
    if parts["metadata"]:
        return web.json_response({
            "model_spec": {"name": server.name, "signature_name": "", "version": str(version.number)},
            "metadata": {"signature_def": {"signature_def": version.signature_defs}}})
    return web.json_response({"model_version_status": [
        {"version": str(version.number), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})


async def _post(request: web.Request) -> web.Response:
    server: ModelServer = request.app["server"]
    parts = _parse(request)
    if parts["metadata"] or parts["verb"] is None:
        raise Refused(405, f"{request.path} takes GET (status or metadata); predict is POST .../NAME:predict. Received: POST")
    if parts["verb"] != "predict":
        raise rest.BadRequest(f"this server answers :predict (the signatures are SavedModel signatures, "
                              f"not Classify/Regress). Received: :{parts['verb']}")
    version = server.version(parts["name"], parts["version"])
    body = rest.parse_json(await request.read())
    signature = rest.signature_name(body)
    if signature not in version.specs:
        raise rest.BadRequest(f"no signature '{signature}' in version {version.number}; it has "
                              f"{sorted(version.specs)}. Received: signature_name={signature!r}")
    arrays, rows = rest.inputs(body, version.specs[signature])
    outputs = await server.predict(version, signature, arrays)
    return web.json_response(rest.response(outputs, rows))


async def _page(request: web.Request) -> web.Response:
    html = resources.files("keras_transfer.serving").joinpath("page.html").read_text()
    return web.Response(text=html.replace("{{MODEL_NAME}}", request.app["server"].name), content_type="text/html")


async def _explain(request: web.Request) -> web.Response:
    server: ModelServer = request.app["server"]
    encoded = await request.read()
    if not encoded:
        raise rest.BadRequest("the body is empty: send the bytes of one image file")
    answer = await asyncio.get_running_loop().run_in_executor(server.executor, server.explain_bytes, encoded)
    return web.json_response(answer)


def application(server: ModelServer, max_body_bytes: int = 32 << 20) -> web.Application:
    """The aiohttp application answering for ``server``."""
    app = web.Application(middlewares=[_json_errors], client_max_size=max_body_bytes)
    app["server"] = server
    app.router.add_get("/", _page)
    app.router.add_post("/page/explain", _explain)
    app.router.add_get("/v1/models/{rest:.+}", _get)
    app.router.add_post("/v1/models/{rest:.+}", _post)

    async def watching(app):
        task = asyncio.get_running_loop().create_task(server.watch())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.close()

    app.cleanup_ctx.append(watching)
    return app


def default_name(export_dir: str) -> str:
    """The model's URL name: the export folder's name, or its run folder's for ``RUN/export``."""
    path = os.path.abspath(export_dir)
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        path = os.path.dirname(path)
    if os.path.basename(path) == "export":
        path = os.path.dirname(path)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.basename(path)) or "default"
