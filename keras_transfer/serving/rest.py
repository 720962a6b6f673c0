"""TF Serving's REST request and response bodies, as numpy (tensorflow/serving ``api_rest.md``).

A predict request names a signature (``signature_name``, default ``serving_default``) and gives
its inputs either as rows, ``{"instances": [...]}``, one entry per example (the input's value, or
``{name: value}`` for each named input), or as columns, ``{"inputs": value}`` or
``{"inputs": {name: value}}``, each value batch-major. A string input's value may be
``{"b64": "..."}`` (binary data). Rows are answered ``{"predictions": [...]}``, one entry per
example (a ``{output: value}`` object when the signature has several outputs), columns
``{"outputs": ...}``.

Every malformed body raises :class:`BadRequest` with a message saying what was wrong and
what to send; the server answers it with HTTP 400 and ``{"error": message}``. Pure functions:
no TensorFlow, no server.
"""

from __future__ import annotations

import base64
import binascii
import json

import numpy as np

DEFAULT_SIGNATURE = "serving_default"

# TF Serving's DataType names for the dtypes a signature of this package can take or give
_NUMPY_DTYPES = {"DT_UINT8": np.uint8, "DT_INT32": np.int32, "DT_INT64": np.int64,
                 "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64, "DT_STRING": object}


class BadRequest(ValueError):
    """A request body the server cannot use (answered with 400 and this message)."""


def parse_json(body: bytes) -> dict:
    try:
        request = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(f"the body is not JSON ({err}); send {{\"instances\": [...]}} or {{\"inputs\": ...}}") from None
    if not isinstance(request, dict):
        raise BadRequest(f"the body must be a JSON object with 'instances' or 'inputs'. Received: {type(request).__name__}")
    return request


def signature_name(request: dict) -> str:
    name = request.get("signature_name", DEFAULT_SIGNATURE)
    if not isinstance(name, str):
        raise BadRequest(f"'signature_name' must be a string. Received: {name!r}")
    return name


def _is_b64(value) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _unb64(value, where: str):
    """``{"b64": s}`` anywhere in a nested list becomes the decoded bytes; strings become UTF-8 bytes."""
    if _is_b64(value):
        text = value["b64"]
        if not isinstance(text, str):
            raise BadRequest(f"{where}: 'b64' must hold a base64 string. Received: {type(text).__name__}")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadRequest(f"{where}: the 'b64' value is not valid base64 ({err})") from None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        return [_unb64(v, where) for v in value]
    raise BadRequest(f"{where}: a string input takes strings or {{\"b64\": ...}} objects. Received: {type(value).__name__}")


def _as_array(value, spec: dict, where: str) -> np.ndarray:
    """One input's batch-major value as the array its TensorSpec (``dtype``, ``shape``) asks for."""
    dtype, shape = spec["dtype"], spec["shape"]
    if dtype == "DT_STRING":
        array = np.asarray(_unb64(value, where), dtype=object)
    else:
        try:
            array = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError) as err:  # ragged lists, strings, objects
            raise BadRequest(f"{where} takes a rectangular array of numbers ({dtype}), every example of one request "
                             f"the same shape ({str(err).splitlines()[0]}). Encoded image files go to the "
                             "serve_bytes signature as {\"b64\": ...}") from None
        target = np.dtype(_NUMPY_DTYPES.get(dtype, np.float32))
        if target.kind in "ui":
            info = np.iinfo(target)
            if array.size and (np.any(array != np.round(array)) or array.min() < info.min or array.max() > info.max):
                raise BadRequest(f"{where} takes whole numbers in {info.min}..{info.max} ({dtype}). "
                                 f"Received: values from {array.min():g} to {array.max():g}")
        array = array.astype(target)
    if shape is not None and (array.ndim != len(shape) or any(
            want is not None and want != got for want, got in zip(shape, array.shape))):
        wanted = "[" + ", ".join("-1" if d is None else str(d) for d in shape) + "]"
        raise BadRequest(f"{where} must have shape {wanted} (-1: any size), batch first. Received: shape {list(array.shape)}")
    return array


def inputs(request: dict, specs: dict[str, dict]) -> tuple[dict[str, np.ndarray], bool]:
    """The signature's input arrays from a predict request, and whether it came as rows.

    ``specs``: input name -> ``{"dtype": "DT_UINT8", "shape": [None, None, None, 3]}``."""
    has_rows, has_columns = "instances" in request, "inputs" in request
    if has_rows == has_columns:
        raise BadRequest("the body must have exactly one of 'instances' (rows) or 'inputs' (columns). "
                         f"Received keys: {sorted(request)}")
    names = list(specs)
    if has_rows:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise BadRequest("'instances' must be a non-empty list, one entry per example")
        named = all(isinstance(r, dict) and not _is_b64(r) for r in rows)
        if len(names) > 1 and not named:
            raise BadRequest(f"this signature has inputs {names}: each instance must be an object naming them")
        if named:
            for r in rows:
                if set(r) != set(names):
                    raise BadRequest(f"each instance must name the inputs {names}. Received: {sorted(r)}")
            columns = {n: [r[n] for r in rows] for n in names}
        else:
            columns = {names[0]: rows}
    else:
        value = request["inputs"]
        if isinstance(value, dict) and not _is_b64(value):
            if set(value) != set(names):
                raise BadRequest(f"'inputs' must name the inputs {names}. Received: {sorted(value)}")
            columns = value
        elif len(names) == 1:
            columns = {names[0]: value}
        else:
            raise BadRequest(f"this signature has inputs {names}: 'inputs' must be an object naming them")
    arrays = {n: _as_array(columns[n], specs[n], f"input '{n}'") for n in names}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise BadRequest(f"every input must have the same, non-zero number of examples. Received: {sorted(sizes)}")
    return arrays, has_rows


def _jsonable(array: np.ndarray, name: str):
    if array.dtype == object or array.dtype.kind == "S":
        def text(b):
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(b).decode()}
            try:
                return b.decode()
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(b).decode()}
        return np.vectorize(text, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def response(outputs: dict[str, np.ndarray], rows: bool) -> dict:
    """The answer body: ``{"predictions": [...]}`` for rows, ``{"outputs": ...}`` for columns."""
    columns = {k: _jsonable(np.asarray(v), k) for k, v in outputs.items()}
    single = next(iter(columns.values())) if len(columns) == 1 else None
    if not rows:
        return {"outputs": single if single is not None else columns}
    if single is not None:
        return {"predictions": single}
    n = len(next(iter(columns.values())))
    return {"predictions": [{k: v[i] for k, v in columns.items()} for i in range(n)]}
