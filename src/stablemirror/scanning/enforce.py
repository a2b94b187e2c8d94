"""Scanning policy: a RegistryService wrapper (like trust/enforce.py) that starts scans
after a push commits and decides each manifest GET from the scan result.

Per namespace: `off` does nothing; `warn` serves, logs, counts and audits; `enforce`
answers 403 DENIED naming the file and the finding. Before a scan finished, `pending:
allow` serves (and scans in the background), `pending: block` waits up to
`scanning.pending_wait_seconds` for the scan and refuses if it is still running. A pull
finding no result (a mirror's first pull, a push from before scanning was enabled) starts
the scan: that is how a mirror scans what it ingests. A failed scan blocks like a finding.
Only HEAD is never checked: supply-chain artifacts (signatures, SBOMs, our own reports)
are scanned like anything else, since a media type is only a claim (a pickle pushed as an
"SBOM" layer is still a pickle); their JSON scans clean in microseconds. A blob GET of a
blob whose own analysis has blocking findings is refused in `enforce` too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from stablemirror.index.audit_events import DENIED, OK, AuditEvent, AuditSink
from stablemirror.index.protocol import StoredManifest
from stablemirror.metrics import Metrics, ScanBlock
from stablemirror.oci.errors import Denied
from stablemirror.registry.forwarding import ForwardingRegistry
from stablemirror.registry.protocol import (
    BlobSource,
    PutManifestResult,
    RegistryService,
    RequestContext,
)
from stablemirror.scanning.analyze import ANALYZER_VERSION
from stablemirror.scanning.exemptions import covers, verified
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.jobs import ScanJobs
from stablemirror.scanning.policy import ScanPolicy, select_scan_policy
from stablemirror.scanning.store import FAILED, PENDING, ScanStore
from stablemirror.trust.keys import PublicKey

log = logging.getLogger("stablemirror.scanning")
DETAIL_FINDINGS = 10


class ScanningRegistry(ForwardingRegistry):
    def __init__(self, inner: RegistryService, jobs: ScanJobs, scans: ScanStore,
                 policies: Sequence[ScanPolicy], wait_seconds: float,
                 metrics: Metrics | None = None, audit: AuditSink | None = None,
                 exemption_keys: Sequence[PublicKey] = ()) -> None:
        super().__init__(inner)
        self.jobs = jobs
        self.scans = scans
        self.policies = list(policies)
        self.wait_seconds = wait_seconds
        self.metrics = metrics
        self.audit = audit
        self.exemption_keys = list(exemption_keys)

    def policy(self, repository: str) -> ScanPolicy | None:
        policy = select_scan_policy(self.policies, repository)
        return None if policy is None or policy.mode == "off" else policy

    async def put_manifest(self, ctx: RequestContext, repository: str, reference: str,
                           body: bytes, content_type: str, extra_tags: list[str]
                           ) -> PutManifestResult:
        result = await self.inner.put_manifest(ctx, repository, reference, body,
                                               content_type, extra_tags)
        if self.policy(repository) is not None:
            self.jobs.submit(repository, str(result.digest))  # after the commit, not awaited
        return result

    async def get_manifest(self, ctx: RequestContext, repository: str, reference: str
                           ) -> StoredManifest:
        found = await self.inner.get_manifest(ctx, repository, reference)
        if ctx.method == "HEAD":
            return found
        policy = self.policy(repository)
        if policy is None:
            return found
        scan = await self.scans.manifest(repository, found.digest)
        if scan is None or scan.status == PENDING or self.scans.stale(scan, ANALYZER_VERSION):
            self.jobs.submit(repository, found.digest)
            if policy.pending == "allow":
                return found
            scan = await self.jobs.wait(repository, found.digest, self.wait_seconds)
        if scan is None or scan.status == PENDING or (
                scan.analyzer != ANALYZER_VERSION):
            await self._refuse(ctx, repository, reference, found.digest, policy, "pending", [],
                               "the scan of this manifest has not finished (pending: block)")
            return found
        reason: ScanBlock = "failed" if scan.status == FAILED else "findings"
        blocking = scan.findings if scan.status == FAILED else policy.blocking(scan.findings)
        if not blocking or await self._exempt(ctx, repository, reference, found.digest,
                                              blocking):
            return found
        first = blocking[0]
        more = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
        await self._refuse(ctx, repository, reference, found.digest, policy, reason, blocking,
                           f"blocked by scan: {first.describe()}{more}")
        return found

    async def open_blob(self, ctx: RequestContext, repository: str, digest: str) -> BlobSource:
        policy = self.policy(repository)
        if policy is not None and policy.mode == "enforce":
            blocking = policy.blocking(await self.scans.blocked_blob(digest, ANALYZER_VERSION))
            if blocking:
                self._count("findings")
                raise Denied(repository=repository, digest=digest, policy=policy.pattern,
                             reason=f"blocked by scan: {blocking[0].describe()}")
        return await self.inner.open_blob(ctx, repository, digest)

    async def _refuse(self, ctx: RequestContext, repository: str, reference: str, digest: str,
                      policy: ScanPolicy, reason: ScanBlock, findings: Sequence[Finding],
                      message: str) -> None:
        detail: dict[str, Any] = {
            "policy": policy.pattern, "mode": policy.mode, "scan": reason,
            "findings": [f.to_json() for f in findings[:DETAIL_FINDINGS]]}
        if policy.mode == "warn":
            log.warning("serving %s@%s under warn: %s", repository, digest, message)
            self._count("warned")
            await self._audit(ctx, repository, reference, digest, OK, detail)
            return
        log.info("denied %s@%s: %s (policy %s)", repository, digest, message, policy.pattern)
        self._count(reason)
        await self._audit(ctx, repository, reference, digest, DENIED, detail)
        raise Denied(repository=repository, digest=digest, policy=policy.pattern,
                     scan=reason, findings=detail["findings"], reason=message)

    async def _exempt(self, ctx: RequestContext, repository: str, reference: str, digest: str,
                      findings: Sequence[Finding]) -> bool:
        if not self.exemption_keys:
            return False
        exemption = await self.scans.exemption(repository, digest)
        if exemption is None:
            return False
        doc = verified(exemption, self.exemption_keys)
        if doc is None:
            log.warning("exemption of %s@%s does not verify: ignored", repository, digest)
            return False
        if not covers(doc, findings):
            return False
        await self._audit(ctx, repository, reference, digest, OK,
                          {"exempted": True, "by": doc.get("actor"), "key": exemption.key_id,
                           "reason": doc.get("reason"),
                           "findings": [f.to_json() for f in findings[:DETAIL_FINDINGS]]})
        return True

    def _count(self, reason: ScanBlock) -> None:
        if self.metrics is not None:
            self.metrics.scan_pull_blocked(reason)

    async def _audit(self, ctx: RequestContext, repository: str, reference: str, digest: str,
                     result: str, detail: dict[str, Any]) -> None:
        if self.audit is None:
            return
        event = AuditEvent(action="manifest.pull.scan", actor=ctx.actor or "",
                           client=ctx.client, user_agent=ctx.user_agent,
                           repository=repository, reference=reference, digest=digest,
                           result=result, detail=detail, request_id=ctx.request_id)
        try:
            await self.audit(event)
        except Exception:
            log.exception("could not audit the scan decision on %s@%s", repository, digest)
