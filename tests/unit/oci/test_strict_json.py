"""Strict JSON for manifests: UTF-8 only, bounded nesting checked before parsing, no
duplicate keys, no lone surrogates, no NaN/Infinity; and all of it within a time bound."""

from __future__ import annotations

import codecs
import contextlib
import json
import time

import pytest

from stablemirror.oci.strict_json import JsonRejected, load_json, nesting_exceeds

LIMIT = 8


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b'{"a": [1, 2.5, true, null, "x"], "b": {"c": {}}}',
        '{"naïve": "日本語 \\ud83d\\ude00"}'.encode(),  # a surrogate *pair* is fine
        b'{"s": "brackets in strings: [[[[{{{{ \\" ]]]]"}',
    ],
)
def test_valid_json_loads(data: bytes) -> None:
    assert load_json(data, LIMIT) == json.loads(data)


@pytest.mark.parametrize(
    "data, reason",
    [
        (codecs.BOM_UTF8 + b'{"a": 1}', "byte order mark"),
        ('{"a": 1}'.encode("utf-16"), "UTF-8"),
        ('{"a": 1}'.encode("utf-16-le"), "JSON"),
        ('{"a": 1}'.encode("utf-32"), "UTF-8"),
        (b'{"a": "\xff"}', "UTF-8"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"x": {"k": 1, "j": 2, "k": 1}}', "duplicate key"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udc00": "v"}', "surrogate"),
        (b'{"a": NaN}', "not a JSON number"),
        (b'{"a": -Infinity}', "not a JSON number"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "JSON"),
        (b"{", "JSON"),
    ],
)
def test_rejected(data: bytes, reason: str) -> None:
    with pytest.raises(JsonRejected) as info:
        load_json(data, LIMIT)
    assert reason in info.value.reason


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_depth_limit(opener: bytes, closer: bytes) -> None:
    at_limit = b'{"x":' + opener * (LIMIT - 1) + b"1" + closer * (LIMIT - 1) + b"}"
    assert load_json(at_limit, LIMIT) is not None
    over = b'{"x":' + opener * LIMIT + b"1" + closer * LIMIT + b"}"
    with pytest.raises(JsonRejected) as info:
        load_json(over, LIMIT)
    assert "nested deeper" in info.value.reason


def test_deep_nesting_is_refused_before_parsing_recurses() -> None:
    # 100k levels: json.loads itself would raise RecursionError.
    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        data = b'{"x":' + opener * 100_000 + closer * 100_000 + b"}"
        with pytest.raises(JsonRejected):
            load_json(data, 64)


def test_brackets_inside_strings_do_not_count() -> None:
    data = b'{"x": "' + b"[{" * 10_000 + b'"}'
    assert load_json(data, LIMIT) == {"x": "[{" * 10_000}
    assert not nesting_exceeds(data, LIMIT)
    escaped = b'{"x": "\\"[[[[[[[[[[[[\\\\"}'  # \" stays inside, \\" ends the string
    assert load_json(escaped, LIMIT) == {"x": '"[[[[[[[[[[[[\\'}


@pytest.mark.parametrize(
    "data",
    [
        b'"' + b'\\"' * 1_000_000,  # unterminated string of escaped quotes
        b'"' + b'\\"' * 1_000_000 + b"\\",  # ... ending in a lone backslash
        b"[" * 2_000_000,
        b"[[]," * 1_000_000,
        b"[" + b"[]," * 1_000_000 + b"[]]",  # wide and shallow: valid
        b'"a",' * 1_000_000,
    ],
)
def test_scan_is_linear_on_hostile_input(data: bytes) -> None:
    started = time.monotonic()
    with contextlib.suppress(JsonRejected):
        load_json(data, 64)
    assert time.monotonic() - started < 5.0
