"""Forwarding: every committed record, as one JSON line, to a file and/or syslog.

A tailer rather than a hook: it reads the chain after `seq` it last forwarded, so records
written inside other transactions (pushes, deletes) and by other processes (the CLI, other
workers) are forwarded too, once they commit. Workers share the job through an exclusive
lock on the state file, which holds the last forwarded seq: at-least-once, in chain order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import logging.handlers
import os
from pathlib import Path
from typing import TextIO

from stablemirror.audit.log import AuditLog, AuditQuery
from stablemirror.index.audit_events import AuditRecord

BATCH = 1000
log = logging.getLogger("stablemirror.audit")


def _syslog(target: str) -> logging.Handler:
    if target.startswith("/"):
        return logging.handlers.SysLogHandler(
            address=target, facility=logging.handlers.SysLogHandler.LOG_AUTH)
    host, _, port = target.rpartition(":")
    return logging.handlers.SysLogHandler(
        address=(host or "127.0.0.1", int(port or 514)),
        facility=logging.handlers.SysLogHandler.LOG_AUTH)


class Forwarder:
    def __init__(self, audit: AuditLog, state_file: Path, file: Path | None,
                 syslog: str | None) -> None:
        self.audit = audit
        self.state_file = state_file
        self.file = file
        self.syslog = _syslog(syslog) if syslog else None

    def _position(self) -> int:
        try:
            return int(self.state_file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _save(self, seq: int) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(str(seq))
        os.replace(tmp, self.state_file)

    def _try_lock(self) -> TextIO | None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self.state_file.with_suffix(".lock"), "a")  # noqa: SIM115 - returned
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        return lock

    async def run_once(self) -> int:
        """Forward what committed since last time; 0 if another process holds the job."""
        lock = await asyncio.to_thread(self._try_lock)
        if lock is None:
            return 0
        try:
            records = await self.audit.query(
                AuditQuery(after_seq=self._position(), limit=BATCH))
            if records:
                await asyncio.to_thread(self._emit, records)
            return len(records)
        finally:
            lock.close()  # releases the flock

    def _emit(self, records: list[AuditRecord]) -> None:
        lines = [json.dumps(r.to_json(), sort_keys=True, separators=(",", ":"))
                 for r in records]
        if self.file is not None:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with open(self.file, "a", encoding="utf-8") as out:
                out.write("".join(line + "\n" for line in lines))
                out.flush()
                os.fsync(out.fileno())
        if self.syslog is not None:
            for line in lines:
                self.syslog.handle(logging.makeLogRecord(
                    {"msg": "stablemirror-audit: %s", "args": (line,),
                     "levelno": logging.INFO, "levelname": "INFO"}))
        self._save(records[-1].seq)

    def close(self) -> None:
        if self.syslog is not None:
            with contextlib.suppress(OSError):
                self.syslog.close()
