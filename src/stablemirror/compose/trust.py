"""Composition of integrity and trust (called from app.py, the composition root).

    TrustEnforcer  (signature policies on manifest GETs)
      -> VerifiedReads  (verify_on_read, quarantine, heal on read)
        -> the registry (hosted, or the mirror's router over hosted + proxied)
plus the periodic `scrub` job when `integrity.scrub.interval_seconds` is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from stablemirror.compose.background import Background
from stablemirror.config import Settings
from stablemirror.index.audit_events import AuditSink
from stablemirror.index.trust_rows import TrustIndex
from stablemirror.integrity.reads import VerifiedReads
from stablemirror.integrity.scrub import (
    BlobHealer,
    Quarantine,
    Scrubber,
    ScrubWorker,
)
from stablemirror.jobs.runner import JobContext
from stablemirror.metrics import Metrics
from stablemirror.registry.protocol import RegistryService
from stablemirror.store.protocol import BlobStore
from stablemirror.trust.enforce import TrustEnforcer
from stablemirror.trust.policy import PolicySource, TrustPolicy, policy_from_config


def config_policies(settings: Settings) -> list[TrustPolicy]:
    return [policy_from_config(p.pattern, p.mode, p.require) for p in settings.trust.policies]


@dataclass
class TrustParts:
    registry: RegistryService
    index: TrustIndex
    worker: ScrubWorker | None

    def schedule(self, background: Background) -> None:
        worker = self.worker
        if worker is not None:
            async def scrub(ctx: JobContext) -> None:
                await worker.run_pass(ctx.keep_going)

            background.job("scrub", worker.interval, scrub)


def build_trust(settings: Settings, inner: RegistryService, store: BlobStore,
                index: TrustIndex, metrics: Metrics, audit: AuditSink | None = None,
                healer: BlobHealer | None = None) -> TrustParts:
    quarantine = Quarantine(store, index, metrics, audit, healer)
    integrity = settings.integrity
    reads = VerifiedReads(inner, index, quarantine, integrity.verify_on_read,
                          integrity.namespaces)
    policies = PolicySource(index, config_policies(settings), settings.trust.refresh_seconds)
    enforcer = TrustEnforcer(reads, policies, index, metrics, audit)
    worker = None
    if integrity.scrub.interval_seconds > 0:
        scrubber = Scrubber(store, index, quarantine, integrity.scrub.rate_bytes_per_second,
                            metrics)
        worker = ScrubWorker(scrubber, integrity.scrub.interval_seconds,
                             integrity.scrub.reverify_after_seconds)
    return TrustParts(enforcer, index, worker)
