"""Keras: `Lambda` layers (marshalled Python bytecode) and custom objects (classes that
live outside Keras, imported by name at load time) in a model config.

`.keras` is a zip whose `config.json` is the model config; a legacy `.h5` file keeps the
same JSON in its `model_config` attribute, which this module finds by scanning the file's
bytes for config documents (HDF5 stores attribute strings unencoded), one chunk at a time.
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
_CONFIG_START = re.compile(rb'\{\s*"class_name"\s*:')
MAX_CONFIG = 64 << 20


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
    """Find JSON model configs in an HDF5 file and check them; stream in chunks."""
    decoder = json.JSONDecoder()
    carry = b""
    base = 0
    while True:
        chunk = stream.read(CHUNK)
        data = carry + chunk
        at = 0
        while True:
            m = _CONFIG_START.search(data, at)
            if m is None:
                break
            try:
                doc, end = decoder.raw_decode(data[m.start():].decode("utf-8", "replace"))
            except ValueError:
                if chunk and len(data) - m.start() < MAX_CONFIG:
                    break  # may complete with the next chunk
                at = m.start() + 1
                continue
            scan_keras_config(doc, out, base + m.start())
            at = m.start() + max(end, 1)
        if not chunk:
            return
        keep = data[at:] if len(data) - at < MAX_CONFIG else data[-64:]
        base += len(data) - len(keep)
        carry = keep
