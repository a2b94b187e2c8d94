"""Log formatting: one JSON object per line, or text with key=value fields."""

from __future__ import annotations

import json
import logging

from stablemirror.logs import JsonFormatter, TextFormatter


def record(msg: str, fields: dict[str, object] | None = None,
           exc: BaseException | None = None) -> logging.LogRecord:
    rec = logging.LogRecord("stablemirror.access", logging.INFO, __file__, 1, msg, None,
                            (type(exc), exc, exc.__traceback__) if exc else None)
    if fields is not None:
        rec.fields = fields
    return rec


def test_json_line_has_the_fields_at_top_level() -> None:
    line = JsonFormatter().format(record("GET /v2/ 200", {"status": 200, "user": None,
                                                          "request_id": "abc"}))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "GET /v2/ 200" and doc["level"] == "info"
    assert doc["logger"] == "stablemirror.access" and doc["pid"] > 0
    assert doc["status"] == 200 and doc["user"] is None and doc["request_id"] == "abc"
    assert doc["ts"].endswith("+00:00")


def test_json_keeps_a_traceback_on_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        line = JsonFormatter().format(record("failed", exc=exc))
    assert "\n" not in line and "RuntimeError: boom" in json.loads(line)["exc"]


def test_text_appends_key_values_and_quotes_when_needed() -> None:
    line = TextFormatter().format(record("GET / 200", {"status": 200, "user": None,
                                                       "agent": "containerd/1.7 x"}))
    assert line.endswith('GET / 200 status=200 agent="containerd/1.7 x"')
    assert "user=" not in line
