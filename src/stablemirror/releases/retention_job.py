"""Retention of versions per namespace: the periodic job and `release retention`.

What goes is decided by releases/retention.py (pure). A doomed version's tag is removed;
its manifest goes with it when no other tag points at it (then `gc` frees the blobs).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from stablemirror.events.model import RegistryEvent
from stablemirror.index.audit_events import AuditEvent
from stablemirror.index.protocol import RegistryIndex
from stablemirror.oci.digest import Digest
from stablemirror.registry.protocol import RequestContext
from stablemirror.releases import store
from stablemirror.releases.retention import Doomed, VersionFacts, plan
from stablemirror.releases.semver import is_floating_tag, parse_version
from stablemirror.releases.service import ReleaseService


@dataclass(frozen=True, slots=True)
class Removal:
    repository: str
    doomed: Doomed

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, "version": self.doomed.tag,
                "digest": self.doomed.digest, "reason": self.doomed.reason}


class Retention:
    def __init__(self, releases: ReleaseService, index: RegistryIndex) -> None:
        self.releases = releases
        self.index = index

    def _prefixes(self, repository: str | None) -> list[str]:
        if repository is not None:
            return [repository]
        return [ns.prefix for ns in self.releases.settings.namespaces if ns.retention.enabled]

    async def run(self, ctx: RequestContext, dry_run: bool, repository: str | None = None,
                  keep_per_line: int | None = None, keep_days: float | None = None
                  ) -> list[Removal]:
        """Over every namespace with retention enabled, or just `repository`."""
        await self.releases.flush_pulls()
        db = self.releases.db
        repos: list[str] = []
        for prefix in self._prefixes(repository):
            found = await db.read(functools.partial(_under, prefix=prefix))
            repos += [r for r in found if repository is None or r == repository]
        removals: list[Removal] = []
        for repo in dict.fromkeys(repos):
            cfg = self.releases.namespace(repo).retention
            per_line = cfg.keep_per_line if keep_per_line is None else keep_per_line
            days = cfg.keep_days if keep_days is None else keep_days
            facts = await db.read(functools.partial(_facts, repository=repo))
            for doomed in plan(facts, per_line, days, time.time()):
                removals.append(Removal(repo, doomed))
                if not dry_run:
                    await self._remove(ctx, repo, doomed)
        return removals

    async def _remove(self, ctx: RequestContext, repository: str, doomed: Doomed) -> None:
        event = AuditEvent(action="release.retention", actor=ctx.actor or "retention",
                           client=ctx.client, user_agent=ctx.user_agent,
                           request_id=ctx.request_id, repository=repository,
                           reference=doomed.tag, digest=doomed.digest,
                           detail={"reason": doomed.reason})
        audit = event if self.releases.audit is not None else None

        def others(c: Connection) -> int:
            rid = store.repo_id(c, repository)
            return 0 if rid is None else store.other_tags_of(c, rid, doomed.digest, doomed.tag)

        by_tag = bool(await self.releases.db.read(others))
        if by_tag:
            deleted = await self.index.delete_tag(repository, doomed.tag, audit=audit)
        else:
            deleted = await self.index.delete_manifest(repository, Digest.parse(doomed.digest),
                                                       audit=audit)
        if deleted and self.releases.events is not None:  # as a client's DELETE would
            await self.releases.events.accept(RegistryEvent(
                action="delete", repository=repository, digest=doomed.digest,
                tag=doomed.tag if by_tag else "", actor=ctx.actor or "retention",
                client=ctx.client, user_agent=ctx.user_agent, request_id=ctx.request_id))


def _under(c: Connection, prefix: str) -> list[str]:
    return store.repositories_under(c, prefix)


def _facts(c: Connection, repository: str) -> list[VersionFacts]:
    rid = store.repo_id(c, repository)
    if rid is None:
        return []
    tags = store.tags(c, rid)
    protected = {e.digest for entries in store.channels(c, rid).values() for e in entries}
    protected |= {d for t, (d, _) in tags.items() if is_floating_tag(t)}
    pulls = store.pulls(c, rid)
    return [VersionFacts(t, d, pulls[t][1] if t in pulls else None, d in protected)
            for t, (d, _) in tags.items() if parse_version(t) is not None]
