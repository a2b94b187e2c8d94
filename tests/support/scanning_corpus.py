"""A corpus of model files for the scanning tests, written by code: malicious files for
each technique the analyzers must catch, and benign files with the structure real
checkpoints have. torch and numpy are not installed: stand-in modules registered under
their names let the real `pickle` module write what torch.save / numpy would."""

from __future__ import annotations

import bz2
import collections
import gzip
import io
import json
import lzma
import os
import pickle
import struct
import sys
import tarfile
import types
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import zstandard


# -- stand-ins for torch and numpy ------------------------------------------------------------
class _Storage:
    def __init__(self, kind: type, key: str, n: int) -> None:
        self.kind, self.key, self.n = kind, key, n


class _Tensor:
    def __init__(self, storage: _Storage, size: tuple[int, ...]) -> None:
        self.storage, self.size = storage, size

    def __reduce_ex__(self, proto: object) -> Any:
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        stride = tuple(1 for _ in self.size)
        return (rebuild, (self.storage, 0, self.size, stride, False,
                          collections.OrderedDict()))


class _Dtype:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> Any:
        dtype = sys.modules["numpy"].dtype
        return (dtype, (self.code, False, True), (3, "<", None, None, None, -1, -1, 0))


class _Array:
    def __init__(self, data: bytes, shape: tuple[int, ...], code: str = "f4") -> None:
        self.data, self.shape, self.code = data, shape, code

    def __reduce__(self) -> Any:
        np = sys.modules["numpy"]
        rec = sys.modules["numpy.core.multiarray"]._reconstruct
        return (rec, (np.ndarray, (0,), b"b"),
                (1, self.shape, _Dtype(self.code), False, self.data))


def _fake_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attrs.items():
        if callable(value):
            value.__module__ = name
            value.__qualname__ = key
        setattr(module, key, value)
    return module


@contextmanager
def stand_ins() -> Iterator[None]:
    def _rebuild_tensor_v2(*args: Any) -> None: ...
    def _reconstruct(*args: Any) -> None: ...
    float_storage = type("FloatStorage", (), {})
    names = {
        "torch": _fake_module("torch", FloatStorage=float_storage),
        "torch._utils": _fake_module("torch._utils", _rebuild_tensor_v2=_rebuild_tensor_v2),
        "numpy": _fake_module("numpy", ndarray=type("ndarray", (), {}),
                              dtype=type("dtype", (), {})),
        "numpy.core": _fake_module("numpy.core"),
        "numpy.core.multiarray": _fake_module("numpy.core.multiarray",
                                              _reconstruct=_reconstruct),
    }
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.n)
        return None


def torch_pickle(obj_factory: Callable[[], Any], protocol: int = 2) -> bytes:
    with stand_ins():
        buf = io.BytesIO()
        _TorchPickler(buf, protocol=protocol).dump(obj_factory())
        return buf.getvalue()


def state_dict() -> Any:
    storage_kind = sys.modules["torch"].FloatStorage
    return collections.OrderedDict(
        (f"layer{i}.weight", _Tensor(_Storage(storage_kind, str(i), 12), (3, 4)))
        for i in range(3))


def torch_zip(data_pkl: bytes, root: str = "archive", extra: dict[str, bytes] | None = None
              ) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{root}/data.pkl", data_pkl)
        z.writestr(f"{root}/byteorder", b"little")
        for i in range(3):  # raw float bytes: 0x80 first, which must not look like a pickle
            z.writestr(f"{root}/data/{i}", b"\x80\x02" + os.urandom(46))
        z.writestr(f"{root}/version", b"3\n")
        z.writestr(f"{root}/.data/serialization_id", b"1234567890")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def numpy_pickle(protocol: int) -> bytes:
    with stand_ins():
        return pickle.dumps({"emb": _Array(struct.pack("<4f", 1, 2, 3, 4), (2, 2)),
                             "steps": collections.OrderedDict(a=1)}, protocol=protocol)


def legacy_torch(main: bytes) -> bytes:
    """torch.save(_use_new_zipfile_serialization=False): magic, protocol, sys info, the
    object, storage keys (all pickles), then raw storage bytes."""
    parts = [pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps({"little_endian": True}, protocol=2), main,
             pickle.dumps(["0", "1", "2"], protocol=2)]
    return b"".join(parts) + struct.pack("<q", 12) + b"\x80" * 48


# -- malicious pickles -------------------------------------------------------------------------
class _Reduce:
    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> Any:
        return (self.fn, self.args)


class _ReduceEx:
    def __reduce_ex__(self, proto: object) -> Any:
        return (os.system, ("true",))


def sbu(s: str) -> bytes:  # SHORT_BINUNICODE
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def load_from_bytes(nested: bytes) -> bytes:
    """What `pickle.dump` of a tensor writes for its storage: torch.load of nested bytes."""
    return (b"\x80\x04ctorch.storage\n_load_from_bytes\nB" + struct.pack("<I", len(nested))
            + nested + b"\x85R.")


def malicious_pickles() -> dict[str, bytes]:
    import builtins
    import importlib
    import runpy
    import subprocess
    import webbrowser
    out: dict[str, bytes] = {}
    for proto in range(6):
        out[f"os_system_p{proto}"] = pickle.dumps(_Reduce(os.system, ("true",)), proto)
        out[f"reduce_ex_p{proto}"] = pickle.dumps(_ReduceEx(), proto)
    out["eval"] = pickle.dumps(_Reduce(builtins.eval, ("1+1",)), 2)
    out["exec"] = pickle.dumps(_Reduce(builtins.exec, ("pass",)), 4)
    out["popen"] = pickle.dumps(_Reduce(subprocess.Popen, (["true"],)), 3)
    out["runpy"] = pickle.dumps(_Reduce(runpy.run_path, ("x.py",)), 4)
    out["importlib"] = pickle.dumps(_Reduce(importlib.import_module, ("os",)), 4)
    out["dunder_import"] = b"c__builtin__\n__import__\n(S'os'\ntR."
    out["webbrowser"] = pickle.dumps(_Reduce(webbrowser.open, ("http://127.0.0.1/",)), 2)
    # STACK_GLOBAL from strings kept in the memo, and the memo slot overwritten later
    out["stack_global_memo"] = (b"\x80\x04" + sbu("collections") + b"\x94" + sbu("system")
                                + b"\x94" + sbu("os") + b"q\x00" + b"h\x00h\x01\x93"
                                + sbu("true") + b"\x85R.")
    # STACK_GLOBAL whose module name is computed at load time (str("os"))
    out["stack_global_computed"] = (b"\x80\x04" + sbu("builtins") + sbu("str") + b"\x93"
                                    + sbu("os") + b"\x85R" + sbu("system") + b"\x93"
                                    + sbu("true") + b"\x85R.")
    # _codecs.decode is not _codecs.encode
    out["codecs_decode"] = b"\x80\x02c_codecs\ndecode\nq\x00" + sbu("x") + b"\x85R."
    # getattr chain: getattr(OrderedDict, "fromkeys") then call the result
    out["getattr_chain"] = (b"\x80\x02cbuiltins\ngetattr\nccollections\nOrderedDict\n"
                            + sbu("fromkeys") + b"\x86R)R.")
    # a call result of an allowed callable, called again (no global named at all)
    out["indirect_call"] = b"\x80\x02cbuiltins\ndict\n)R)R."
    # copyreg: its reconstructor, and the extension registry
    out["copyreg"] = b"\x80\x02ccopyreg\n_reconstructor\n(cos\nsystem\ncbuiltins\nobject\nNtR."
    out["ext1"] = b"\x80\x02\x82\x01" + sbu("true") + b"\x85R."
    out["ext4"] = b"\x80\x02\x84\x01\x00\x00\x00)R."
    # protocol 0 INST and OBJ
    out["inst"] = b"(S'true'\nios\nsystem\n."
    out["obj_computed"] = b"\x80\x02(cbuiltins\ndict\n)R)o."
    # BUILD on an imported global (sets attributes of a module-level object)
    out["build_on_global"] = b"\x80\x02ccollections\nOrderedDict\n}" + sbu("x") + b"K\x01sb."
    # dotted names reach attributes of allowed things
    out["dotted_attr"] = (b"\x80\x04" + sbu("collections") + sbu("OrderedDict.__init__")
                          + b"\x93).")
    out["torch_load_from_bytes"] = b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x01x\x85R."
    out["load_from_bytes_evil"] = load_from_bytes(torch_zip(
        b"\x80\x02cos\nsystem\nC\x04true\x85R."))
    out["load_from_bytes_legacy_evil"] = load_from_bytes(
        b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.")
    # handed to another allowed function, which would call it on bytes never analyzed
    out["load_from_bytes_passed_on"] = (
        b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch.storage\n_load_from_bytes\n"
        b"ctorch\nTensor\nC\x01x\x85}tR.")
    out["load_from_bytes_computed"] = (b"\x80\x02ctorch.storage\n_load_from_bytes\n"
                                       b"c_codecs\nencode\nX\x01\x00\x00\x00xX\x06\x00\x00"
                                       b"\x00latin1\x86R\x85R.")
    # tricks the walker must not be able to follow past
    out["protocol6"] = b"\x80\x06N."
    out["unknown_opcode"] = b"\x80\x02ccollections\nOrderedDict\n)R\xff."
    out["truncated"] = b"\x80\x02ccollections\nOrderedDict\n)"
    out["memo_missing"] = b"\x80\x02h\x07)R."
    return out


def malicious_pickle(name: str = "os_system_p2") -> bytes:
    return malicious_pickles()[name]


# -- other formats ------------------------------------------------------------------------------
def safetensors(tensors: dict[str, tuple[str, list[int], int]] | None = None,
                header: bytes | None = None, data: bytes | None = None,
                length: int | None = None) -> bytes:
    """tensors: name -> (dtype, shape, nbytes), laid out in order."""
    if header is None:
        doc: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        at = 0
        for name, (dtype, shape, nbytes) in (tensors or {"w": ("F32", [2, 2], 16)}).items():
            doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + nbytes]}
            at += nbytes
        header = json.dumps(doc).encode()
        data = data if data is not None else b"\x00" * at
    n = len(header) if length is None else length
    return struct.pack("<Q", n) + header + (data or b"")


def gguf(tensors: list[tuple[bytes, list[int], int, int]] | None = None, version: int = 3,
         n_tensors: int | None = None, data_size: int | None = None) -> bytes:
    """tensors: (name, dims, ggml type, offset). Version 1 has u32 counts and lengths."""
    n = "<I" if version == 1 else "<Q"

    def string(s: bytes) -> bytes:
        return struct.pack(n, len(s)) + s

    tensors = tensors if tensors is not None else [(b"w", [4, 2], 0, 0), (b"b", [4], 0, 32)]
    kv = (string(b"general.architecture") + struct.pack("<I", 8) + string(b"llama")
          + string(b"general.alignment") + struct.pack("<II", 4, 32)
          + string(b"tokenizer.ggml.tokens") + struct.pack("<II", 9, 8) + struct.pack(n, 2)
          + string(b"a") + string(b"b"))
    body = b"GGUF" + struct.pack("<I", version) + struct.pack(
        n, len(tensors) if n_tensors is None else n_tensors) + struct.pack(n, 3) + kv
    for name, dims, ttype, offset in tensors:
        body += string(name) + struct.pack("<I", len(dims))
        body += b"".join(struct.pack(n, d) for d in dims) + struct.pack("<IQ", ttype, offset)
    body += b"\x00" * (-len(body) % 32)
    return body + b"\x00" * (48 if data_size is None else data_size)


def keras_zip(config: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    return buf.getvalue()


def keras_config(*layers: dict[str, Any]) -> dict[str, Any]:
    dense = {"module": "keras.layers", "class_name": "Dense",
             "config": {"units": 4, "activation": {"module": "keras.activations",
                                                   "class_name": "function",
                                                   "config": "relu"}},
             "registered_name": None}
    return {"module": "keras", "class_name": "Sequential",
            "config": {"layers": [dense, *layers]}, "registered_name": None}


LAMBDA_LAYER = {"module": "keras.layers", "class_name": "Lambda",
                "config": {"function": {"class_name": "__lambda__",
                                        "config": {"code": "4wEAAAAA"}}}}
CUSTOM_LAYER = {"module": "evil_pkg.layers", "class_name": "Backdoor",
                "config": {}, "registered_name": "Custom>Backdoor"}


def h5_with_config(config: dict[str, Any]) -> bytes:
    return (b"\x89HDF\r\n\x1a\n" + b"\x00" * 200 + json.dumps(config).encode()
            + b"\x00" * 100)


# minimal protobuf writer for ONNX
def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def onnx_model(location: str | None = None, raw: bytes = b"\x00" * 16) -> bytes:
    tensor = _varint(1 << 3) + _varint(4) + _varint(2 << 3) + _varint(1) + _field(8, b"w")
    if location is None:
        tensor += _field(9, raw)
    else:
        tensor += _field(13, _field(1, b"location") + _field(2, location.encode()))
        tensor += _varint(14 << 3) + _varint(1)
    node = _field(1, b"x") + _field(2, b"y") + _field(4, b"Relu")
    graph = _field(1, node) + _field(2, b"g") + _field(5, tensor)
    return _varint(1 << 3) + _varint(8) + _field(2, b"test") + _field(7, graph)


def npy(descr: str, payload: bytes) -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": (2,)}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def tar_of(files: dict[str, bytes], gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def malicious_files() -> dict[str, bytes]:
    """file name -> content: every one must be found."""
    evil = malicious_pickle()
    files = {f"{k}.pkl": v for k, v in malicious_pickles().items()}
    files.update({
        "model.pt": torch_zip(evil),
        "nested.pt": torch_zip(torch_pickle(state_dict), extra={
            "archive/extra/inner.zip": zip_of({"deep/data.pkl": evil})}),
        "legacy.bin": legacy_torch(evil),
        "pickle_as.safetensors": evil,
        "pickle_as_config.json": evil,
        "proto0_as.txt": b"cos\nsystem\n(S'true'\ntR.",
        "proto0_then_garbage.txt": b"cos\nsystem\n(S'true'\ntR\xff garbage",
        "header_too_long.safetensors": safetensors(length=1 << 40),
        "header_not_json.safetensors": safetensors(header=b"{not json"),
        "offsets_outside.safetensors": safetensors(
            header=json.dumps({"w": {"dtype": "F32", "shape": [2],
                                     "data_offsets": [0, 4096]}}).encode(), data=b"\0" * 8),
        "overlap.safetensors": safetensors(header=json.dumps({
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}).encode(),
            data=b"\0" * 12),
        "gap.safetensors": safetensors(header=json.dumps({
            "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}).encode(),
            data=b"\0" * 8),
        "bad_dtype.safetensors": safetensors({"w": ("F128", [1], 16)}),
        "shape_mismatch.safetensors": safetensors({"w": ("F32", [3, 3], 16)}),
        "gguf_bad_version.gguf": gguf(version=99),
        "gguf_too_many_tensors.gguf": gguf(n_tensors=1 << 60),
        "gguf_offset_outside.gguf": gguf([(b"w", [4, 2], 0, 1 << 20)]),
        "gguf_bad_type.gguf": gguf([(b"w", [4], 77, 0)]),
        "gguf_huge_type.gguf": gguf([(b"w", [4], 0xFFFFFFFF, 0)]),
        "gguf_too_many_dims.gguf": gguf([(b"w", [1, 1, 1, 1, 1], 0, 0)]),
        "gguf_overlap.gguf": gguf([(b"a", [8], 0, 0), (b"b", [8], 0, 0)]),
        "lambda.keras": keras_zip(keras_config(LAMBDA_LAYER)),
        "custom.keras": keras_zip(keras_config(CUSTOM_LAYER)),
        "lambda.h5": h5_with_config(keras_config(LAMBDA_LAYER)),
        "lambda_compact.h5": b"\x89HDF\r\n\x1a\n" + b"\x00" * 64 + json.dumps(
            keras_config(LAMBDA_LAYER), separators=(",", ":")).encode(),
        "custom.h5": h5_with_config(keras_config(CUSTOM_LAYER)),
        "escape.onnx": onnx_model("../../etc/passwd"),
        "absolute.onnx": onnx_model("/etc/shadow"),
        "object.npy": npy("|O", evil),
        "object.npz": zip_of({"arr_0.npy": npy("|O", evil)}),
        "modelpack.tar": tar_of({"weights/model.bin": evil}),
        "torchscript.pt": torch_zip(torch_pickle(state_dict), extra={
            "archive/code/__torch__/model.py": b"def forward(self, x):\n  return x\n",
            "archive/constants.pkl": pickle.dumps((), 2)}),
        "zip_behind_pickle.pkl": pickle.dumps({"a": 1}, 2) + zip_of({"data.pkl": evil}),
        "second_pickle.pkl": pickle.dumps({"a": 1}, 2) + evil,
        "layer.tar.gz": tar_of({"app/model.pkl": evil}, gz=True),
        "joblib.pkl.gz": gzip.compress(evil),
        "joblib.pkl.bz2": bz2.compress(evil),
        "joblib.pkl.xz": lzma.compress(evil),
        "joblib.pkl.lzma": lzma.compress(evil, format=lzma.FORMAT_ALONE),
        "joblib.pkl.z": zlib.compress(evil),
        "joblib.pkl.lz4": b"\x04\x22\x4d\x18" + b"\x00" * 16,
        "layer.tar.zst": zstandard.ZstdCompressor().compress(tar_of({"w/model.bin": evil})),
    })
    return files


def benign_files() -> dict[str, bytes]:
    """file name -> content: none may be blocked."""
    files: dict[str, bytes] = {}
    for proto in range(6):
        files[f"state_dict_p{proto}.pkl"] = torch_pickle(state_dict, proto)
        files[f"numpy_p{proto}.pkl"] = numpy_pickle(proto)
        files[f"plain_p{proto}.pkl"] = pickle.dumps(
            {"lr": 0.1, "steps": [1, 2, 3], "name": "x", "tags": {"a", "b"},
             "raw": b"\x00" * 100, "big": b"\x01" * 200_000,
             "od": collections.OrderedDict(k=(1, 2.5, None, True))}, proto)
    files.update({
        "pytorch_model.bin": torch_zip(torch_pickle(state_dict)),
        "pickled_tensor.pkl": load_from_bytes(torch_zip(torch_pickle(state_dict))),
        "legacy.pt": legacy_torch(torch_pickle(state_dict)),
        "model.safetensors": safetensors({"a": ("F32", [2, 3], 24), "b": ("BF16", [4], 8),
                                          "c": ("I64", [], 8), "d": ("F16", [0], 0)}),
        "model.gguf": gguf(),
        "model_v1.gguf": gguf(version=1),
        "model_v2.gguf": gguf(version=2),
        "quant.gguf": gguf([(b"q", [32, 2], 8, 0)], data_size=96),
        "newer_type.gguf": gguf([(b"q", [64], 40, 0)], data_size=64),  # an id we lack
        "model.keras": keras_zip(keras_config()),
        "model.h5": h5_with_config(keras_config()),
        "model.onnx": onnx_model(),
        "external.onnx": onnx_model("weights/model.data"),
        "floats.npy": npy("<f4", b"\x00" * 8),
        "arrays.npz": zip_of({"a.npy": npy("<f4", b"\x00" * 8)}),
        "config.json": json.dumps({"architectures": ["Llama"], "hidden_size": 8}).encode(),
        "README.md": b"# a model\ncontains no code\n",
        "notes.txt": b"cat\ndog\nbird and more text that is not a pickle\n",
        "train.py": b"import os\nprint(os.getcwd())\n",
        "tokenizer.model": b"\x0a\x05hello" + os.urandom(64),
        "modelpack.tar": tar_of({"weights/model.safetensors": safetensors(),
                                 "config.json": b"{}"}),
        "numpy.pkl.bz2": bz2.compress(numpy_pickle(2)),
        "numpy.pkl.xz": lzma.compress(numpy_pickle(4)),
        "numpy.pkl.z": zlib.compress(numpy_pickle(4)),
        "notes2.txt": b"x marks the spot\nx^2 is not zlib either\n",
        "modelpack.tar.zst": zstandard.ZstdCompressor().compress(
            tar_of({"weights/model.safetensors": safetensors()})),
    })
    return files
