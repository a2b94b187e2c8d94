"""Weight-file headers (pure): what a safetensors or GGUF header says about the model.

Both parsers take the file's first bytes and its size and either answer, raise `NeedMore`
(how many leading bytes they need; the caller feeds more of the same pass), or raise
`HeaderError`. Every length is bounded before anything is allocated. safetensors is our own
parser (the format is 8 bytes of length and a JSON object; the `safetensors` package would
map the whole file): strict JSON (oci/strict_json.py), known dtypes, shapes of
non-negative ints, data offsets that tile the data area exactly. GGUF too (v1-v3): magic,
counts, typed key/values (only a few general.* keys are kept), tensor infos for the
parameter count. Pickle files (.bin .pt .pth .ckpt .pkl) are never parsed, let alone
unpickled: their format is recorded as `pickle` and that is all.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from stablemirror.oci.strict_json import JsonRejected, load_json

MAX_SAFETENSORS_HEADER = 100_000_000  # the reference loader's bound
MAX_GGUF_HEADER = 256 * 1024 * 1024  # vocabularies live in the header: generous
MAX_GGUF_COUNT = 10_000_000
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
              "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6,
              "F6_E3M2": 6}
FLOAT_PRECISION = {"F16": "fp16", "BF16": "bf16", "F32": "fp32", "F64": "fp64",
                   "F8_E5M2": "fp8", "F8_E4M3": "fp8", "F8_E8M0": "fp8", "F4": "fp4",
                   "F6_E2M3": "fp6", "F6_E3M2": "fp6", "I8": "int8", "U8": "uint8"}
# llama.cpp's general.file_type values
GGUF_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
                   10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S",
                   15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS",
                   20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S",
                   25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
                   30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
OTHER_FORMATS = {".onnx": "onnx", ".h5": "keras", ".keras": "keras", ".pb": "tensorflow",
                 ".tflite": "tflite", ".msgpack": "flax", ".npz": "numpy", ".npy": "numpy"}


class HeaderError(ValueError):
    """A weight file whose header is malformed; `str()` is one line naming the format."""


class NeedMore(Exception):
    """Not an error: the parser needs the first `needed` bytes of the file."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed


@dataclass(frozen=True, slots=True)
class WeightInfo:
    format: str
    parameters: int | None = None
    dtypes: frozenset[str] = field(default_factory=frozenset)
    quantization: str | None = None
    architecture: str | None = None
    name: str | None = None


def format_of(name: str) -> str | None:
    """The weight format a file name announces; None when only its bytes can tell."""
    lower = name.lower()
    if lower.endswith(".safetensors"):
        return "safetensors"
    if lower.endswith(".gguf"):
        return "gguf"
    if lower.endswith(PICKLE_SUFFIXES):
        return "pickle"
    for suffix, fmt in OTHER_FORMATS.items():
        if lower.endswith(suffix):
            return fmt
    return None


# -- safetensors ---------------------------------------------------------------------------
def parse_safetensors(head: bytes, file_size: int) -> WeightInfo:
    if file_size < 8:
        raise HeaderError("safetensors: shorter than the 8-byte header length")
    if len(head) < 8:
        raise NeedMore(8)
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > MAX_SAFETENSORS_HEADER or n > file_size - 8:
        raise HeaderError(f"safetensors: header length {n} out of bounds "
                          f"(at most {min(MAX_SAFETENSORS_HEADER, file_size - 8)})")
    if len(head) < 8 + n:
        raise NeedMore(8 + n)
    try:
        doc = load_json(head[8:8 + n], max_depth=4)
    except JsonRejected as e:
        raise HeaderError(f"safetensors: header is not strict JSON: {e.reason}") from None
    if not isinstance(doc, dict):
        raise HeaderError("safetensors: header is not a JSON object")
    data_size = file_size - 8 - n
    spans: list[tuple[int, int, str]] = []
    parameters = 0
    dtypes: set[str] = set()
    for name, entry in doc.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(
                    isinstance(v, str) for v in entry.values()):
                raise HeaderError("safetensors: __metadata__ is not a string map")
            continue
        begin, end, count, dtype = _tensor(name, entry)
        if end > data_size:
            raise HeaderError(f"safetensors: tensor {name!r} ends at {end}, past the data "
                              f"area ({data_size} bytes)")
        spans.append((begin, end, name))
        parameters += count
        dtypes.add(dtype)
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            raise HeaderError(f"safetensors: tensor {name!r} starts at {begin}, expected "
                              f"{at} (tensors overlap or leave a gap)")
        at = end
    if at != data_size:
        raise HeaderError(f"safetensors: tensors cover {at} bytes of a {data_size}-byte "
                          f"data area")
    return WeightInfo("safetensors", parameters, frozenset(dtypes))


def _tensor(name: str, entry: object) -> tuple[int, int, int, str]:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise HeaderError(f"safetensors: tensor {name!r} needs exactly dtype, shape and "
                          f"data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise HeaderError(f"safetensors: tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(
            type(d) is int and d >= 0 for d in shape):
        raise HeaderError(f"safetensors: tensor {name!r} shape is not a list of "
                          f"non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise HeaderError(f"safetensors: tensor {name!r} data_offsets is not [begin, end]")
    count = math.prod(shape)
    expected = (count * DTYPE_BITS[dtype] + 7) // 8
    if offsets[1] - offsets[0] != expected:
        raise HeaderError(f"safetensors: tensor {name!r} takes {offsets[1] - offsets[0]} "
                          f"bytes, its dtype and shape need {expected}")
    return offsets[0], offsets[1], count, dtype


# -- GGUF ----------------------------------------------------------------------------------
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_KEPT = {"general.architecture", "general.name", "general.file_type"}


class _Reader:
    def __init__(self, head: bytes, file_size: int, version: int) -> None:
        self.head, self.file_size, self.at = head, file_size, 4
        self.wide = version >= 2  # v1 counts and lengths are u32

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > min(self.file_size, MAX_GGUF_HEADER):
            where = ("the end of the file" if end > self.file_size
                     else f"{MAX_GGUF_HEADER} bytes")
            raise HeaderError(f"GGUF: header runs past {where}")
        if end > len(self.head):
            raise NeedMore(end)
        out = self.head[self.at:end]
        self.at = end
        return out

    def scalar(self, fmt: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]
        return value

    def count(self, what: str) -> int:
        n = int(self.scalar("<Q" if self.wide else "<I"))
        if n > MAX_GGUF_COUNT:
            raise HeaderError(f"GGUF: {what} {n} over the bound {MAX_GGUF_COUNT}")
        return n

    def string(self) -> bytes:
        n = int(self.scalar("<Q" if self.wide else "<I"))
        return self.take(n)

    def value(self, vtype: int, depth: int = 0) -> object:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9 and depth == 0:
            item_type = int(self.scalar("<I"))
            for _ in range(self.count("array length")):
                self.value(item_type, depth + 1)
            return None
        raise HeaderError(f"GGUF: unknown value type {vtype}")


def parse_gguf(head: bytes, file_size: int) -> WeightInfo:
    if len(head) < 8:
        if file_size < 8:
            raise HeaderError("GGUF: shorter than its magic and version")
        raise NeedMore(8)
    if head[:4] != b"GGUF":
        raise HeaderError("GGUF: wrong magic (not a GGUF file)")
    (version,) = struct.unpack("<I", head[4:8])
    if version not in (1, 2, 3):
        raise HeaderError(f"GGUF: unsupported version {version}")
    r = _Reader(head, file_size, version)
    r.take(4)
    tensors, kvs = r.count("tensor count"), r.count("key/value count")
    kept: dict[str, object] = {}
    for _ in range(kvs):
        key = r.string().decode("utf-8", "replace")
        value = r.value(int(r.scalar("<I")))
        if key in _KEPT:
            kept[key] = value
    parameters = 0
    ggml_types: set[int] = set()
    for _ in range(tensors):
        r.string()
        dims = int(r.scalar("<I"))
        if dims > 8:
            raise HeaderError(f"GGUF: tensor with {dims} dimensions")
        shape = [int(r.scalar("<Q" if r.wide else "<I")) for _ in range(dims)]
        ggml_types.add(int(r.scalar("<I")))
        r.scalar("<Q")
        parameters += math.prod(shape)
    file_type = kept.get("general.file_type")
    quant = GGUF_FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    if quant is None and ggml_types <= {0, 1, 30}:
        quant = {frozenset({0}): "F32", frozenset({1}): "F16",
                 frozenset({30}): "BF16"}.get(frozenset(ggml_types))
    dtypes = frozenset({quant}) if quant in ("F32", "F16", "BF16") else frozenset()
    return WeightInfo("gguf", parameters, dtypes,
                      quantization=None if quant in (None, "F32", "F16", "BF16") else quant,
                      architecture=_text(kept.get("general.architecture")),
                      name=_text(kept.get("general.name")))


def _text(value: object) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else None


# -- summaries -----------------------------------------------------------------------------
def precision_of(dtypes: set[str]) -> str | None:
    """One precision for all floating tensors, `mixed` for several; ints only count alone."""
    floats = {d for d in dtypes if d.startswith("F") or d == "BF16"}
    names = {FLOAT_PRECISION.get(d, d.lower()) for d in (floats or dtypes)}
    if not names:
        return None
    return names.pop() if len(names) == 1 else "mixed"


def param_size(count: int) -> str:
    """`<count><scale>` as the spec writes it: one decimal at most (22.7M, 7B, 0.1K)."""
    for scale, prefix in ((1e15, "Q"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale or prefix == "K":
            text = f"{max(count / scale, 0.1):.1f}".removesuffix(".0")
            return text + prefix
    raise AssertionError("unreachable")
