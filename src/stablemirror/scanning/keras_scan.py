"""Keras: `Lambda` layers (marshalled Python bytecode) and custom objects (classes that
live outside Keras, imported by name at load time) in a model config.

`.keras` is a zip whose `config.json` is the model config; a legacy `.h5` file keeps the
same JSON in its `model_config` attribute, which this module finds by scanning the file's
bytes (HDF5 stores attribute strings unencoded), one chunk at a time.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any

from stablemirror.scanning.findings import Findings

CODE_LAYERS = {"Lambda", "TFOpLambda", "__lambda__"}
KERAS_MODULES = re.compile(r"^(keras|tf_keras|tensorflow\.keras)(\.|$)")
BUILTIN_OBJECTS = {"__tuple__", "__numpy__", "__tensor__", "__bytes__", "__typespec__",
                   "__ellipsis__", "__slice__", "__complex__"}
CHUNK = 1 << 20
OVERLAP = 512  # longer than any match, so one spanning two chunks is seen whole once
_H5_CODE_LAYER = re.compile(rb'"class_name"\s*:\s*"(Lambda|TFOpLambda|__lambda__)"')
_H5_MODULE = re.compile(rb'"module"\s*:\s*"([^"\\]{1,256})"')


def scan_keras_config(doc: Any, out: Findings, offset: int | None = None) -> None:
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        cls = node.get("class_name")
        if not isinstance(cls, str):
            continue
        module = node.get("module")
        registered = node.get("registered_name")
        if cls in CODE_LAYERS or (isinstance(node.get("config"), dict)
                                  and "function_type" in node["config"]
                                  and node["config"].get("function_type") == "lambda"):
            out.add("unsafe_code", "lambda_layer",
                    f"Keras {cls} layer: runs serialized Python code when loaded", offset)
        elif isinstance(module, str) and not KERAS_MODULES.match(module) \
                and module != "builtins" and cls not in BUILTIN_OBJECTS:
            out.add("unsafe_code", "custom_object",
                    f"Keras custom object {module}.{cls} is imported when loaded", offset,
                    module, cls)
        elif isinstance(registered, str) and "." not in registered and ">" in registered \
                and not registered.startswith("keras"):
            out.add("unsafe_code", "custom_object",
                    f"Keras custom object {registered!r} (registered by user code)", offset)


def scan_keras_json(data: bytes, out: Findings) -> None:
    try:
        doc = json.loads(data)
    except ValueError as e:
        out.add("malformed", "keras_config", f"config.json is not JSON: {e}")
        return
    scan_keras_config(doc, out)


def scan_h5(stream: IO[bytes], out: Findings) -> None:
    """Find model-config JSON in an HDF5 file's bytes, one chunk at a time: a code layer
    (`"class_name": "Lambda"`) or a `"module"` outside Keras anywhere is a finding,
    whichever JSON document (model_config, training_config) it sits in."""
    carry = b""
    base = 0  # file offset of carry[0]
    while True:
        chunk = stream.read(CHUNK)
        data = carry + chunk
        limit = len(data) if not chunk else max(0, len(data) - OVERLAP)
        for m in _H5_CODE_LAYER.finditer(data):
            if m.start() < limit:
                out.add("unsafe_code", "lambda_layer",
                        f"Keras {m.group(1).decode()} layer: runs serialized Python code "
                        "when loaded", base + m.start())
        for m in _H5_MODULE.finditer(data):
            module = m.group(1).decode("utf-8", "replace")
            if m.start() < limit and not KERAS_MODULES.match(module) and module != "builtins":
                out.add("unsafe_code", "custom_object",
                        f"Keras custom object from module {module} is imported when loaded",
                        base + m.start(), module)
        if not chunk:
            return
        carry = data[limit:]
        base += limit
