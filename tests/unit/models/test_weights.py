from __future__ import annotations

import json
import struct

import pytest

from stablemirror.models.weights import (
    HeaderError,
    NeedMore,
    param_size,
    parse_gguf,
    parse_safetensors,
    precision_of,
)
from tests.support.gguf_bytes import gguf, string_array, string_value, u32


def st(header: object, data_size: int, raw: bytes | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(body)) + body + b"\0" * data_size


def entry(dtype: str, shape: list[float], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_a_valid_header_gives_parameters_and_dtypes() -> None:
    header = {"__metadata__": {"format": "pt"}, "a": entry("F16", [2, 3], 0, 12),
              "b": entry("I64", [4], 12, 44)}
    data = st(header, 44)
    info = parse_safetensors(data, len(data))
    assert (info.format, info.parameters) == ("safetensors", 10)
    assert info.dtypes == frozenset({"F16", "I64"})


def test_the_header_is_asked_for_in_full() -> None:
    data = st({"a": entry("F32", [1], 0, 4)}, 4)
    with pytest.raises(NeedMore) as more:
        parse_safetensors(data[:10], len(data))
    assert more.value.needed == len(data) - 4


@pytest.mark.parametrize(("data", "says"), [
    (b"\x01\x02", "shorter than the 8-byte"),
    (struct.pack("<Q", 1 << 40) + b"{}", "out of bounds"),
    (struct.pack("<Q", 100) + b"{}", "out of bounds"),
    (st(None, 0, raw=b"{not json}"), "not strict JSON"),
    (st(None, 8, raw=b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":1}'),
     "duplicate key"),
    (st([], 0), "not a JSON object"),
    (st({"a": entry("F99", [1], 0, 4)}, 4), "unknown dtype"),
    (st({"a": entry("F32", [-1], 0, 4)}, 4), "non-negative"),
    (st({"a": entry("F32", [1.5], 0, 4)}, 4), "non-negative"),
    (st({"a": entry("F32", [2], 0, 4)}, 4), "need 8"),
    (st({"a": entry("F32", [1], 4, 0)}, 4), "data_offsets"),
    (st({"a": entry("F32", [1], 0, 4)}, 2), "past the data area"),
    (st({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, 12), "gap"),
    (st({"a": entry("F32", [2], 0, 8), "b": entry("F32", [1], 4, 8)}, 8), "overlap"),
    (st({"a": entry("F32", [1], 0, 4)}, 6), "cover 4 bytes of a 6-byte"),
    (st({"a": {"dtype": "F32", "shape": [1]}}, 4), "exactly dtype"),
    (st({"__metadata__": {"k": 1}}, 0), "__metadata__"),
])
def test_malformed_headers_are_refused_saying_why(data: bytes, says: str) -> None:
    with pytest.raises(HeaderError, match=says):
        parse_safetensors(data, len(data))


def test_gguf_header_gives_architecture_name_quantization_and_parameters() -> None:
    data = gguf([("general.architecture", 8, string_value("llama")),
                 ("general.name", 8, string_value("tiny")),
                 ("tokenizer.ggml.tokens", 9, string_array(["a", "b", "c"])),
                 ("general.file_type", 4, u32(15))],
                [("tok_embd", [8, 4], 12), ("out", [4], 0)])
    info = parse_gguf(data, len(data))
    assert (info.format, info.architecture, info.name) == ("gguf", "llama", "tiny")
    assert (info.quantization, info.parameters) == ("Q4_K_M", 36)


def test_gguf_f16_is_a_precision_not_a_quantization() -> None:
    data = gguf([], [("w", [2, 2], 1)])
    info = parse_gguf(data, len(data))
    assert (info.quantization, precision_of(set(info.dtypes))) == (None, "fp16")


@pytest.mark.parametrize(("data", "says"), [
    (b"GGML" + b"\0" * 40, "wrong magic"),
    (b"GGUF" + struct.pack("<I", 9) + b"\0" * 40, "unsupported version"),
    (b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 0), "over the bound"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 50), "runs past"),
    (gguf([("k", 77, b"")], []), "unknown value type"),
])
def test_malformed_gguf_is_refused(data: bytes, says: str) -> None:
    with pytest.raises(HeaderError, match=says):
        parse_gguf(data, len(data))


def test_a_gguf_header_cut_short_asks_for_more() -> None:
    data = gguf([("general.name", 8, string_value("x" * 100))], [])
    with pytest.raises(NeedMore):
        parse_gguf(data[:40], len(data))


@pytest.mark.parametrize(("count", "text"), [(22_713_216, "22.7M"), (7_000_000_000, "7B"),
                                             (1_500, "1.5K"), (12, "0.1K"),
                                             (1_200_000_000_000, "1.2T")])
def test_param_size_is_written_as_the_spec_says(count: int, text: str) -> None:
    assert param_size(count) == text


def test_precision_mixed_floats_and_ints_alone() -> None:
    assert precision_of({"BF16", "I64"}) == "bf16"
    assert precision_of({"BF16", "F32"}) == "mixed"
    assert precision_of({"I8"}) == "int8"
    assert precision_of(set()) is None
