"""Logging setup: human-readable text or one JSON object per line (`--log-format`).

Code logs through the standard library. Structured values go in `extra={"fields": {...}}`:
the JSON formatter makes them top-level keys, the text formatter appends them as key=value,
so the same call site serves a terminal and a log pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FIELDS = "fields"  # the `extra` key that carries structured values


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    found = getattr(record, FIELDS, None)
    return found if isinstance(found, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process or os.getpid(),
        }
        doc.update(_fields(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items() if v is not None)
        if not extra:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the key=values
        return f"{head} {extra}{sep}{tail}"


def _text(value: object) -> str:
    s = str(value)
    return json.dumps(s) if (not s or " " in s or '"' in s or "=" in s) else s


def configure_logging(level: str, fmt: LogFormat) -> None:
    """Send every logger to stderr in `fmt`; replaces handlers set up before."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
