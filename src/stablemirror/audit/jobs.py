"""Periodic audit jobs inside the server: retention pruning (forwarding: forward.py).

They run as jobs of the index's queue (`audit.retention` once across replicas,
`audit.forward` once per replica: docs/jobs.md), composed in compose/auth.py. They stay safe
to run concurrently (pruning holds the chain head's lock and finds nothing left to do the
second time; forwarding takes a file lock), as an expired lease can run one twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from stablemirror.audit.log import AuditLog

log = logging.getLogger("stablemirror.audit")


def retention_job(audit: AuditLog, retention_days: float) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        before = time.time() - timedelta(days=retention_days).total_seconds()
        checkpoint = await audit.prune_older_than(before)
        if checkpoint is not None:
            log.info("audit retention pruned %s record(s) through seq %d",
                     checkpoint.payload["pruned"], checkpoint.through_seq)
    return run
