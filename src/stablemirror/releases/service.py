"""The releases service: channels over the index. Promotion, split and rollback are
server-side pointer moves by digest, each one transaction with its history row and audit
record; nothing is re-pushed, so signatures and referrers stay attached."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from stablemirror.events.model import EventSink, RegistryEvent
from stablemirror.index.audit_chain import append as append_audit
from stablemirror.index.audit_events import AuditEvent, AuditSink
from stablemirror.index.db import Database
from stablemirror.metrics import Metrics
from stablemirror.oci.errors import ReleaseInvalid, TagInvalid
from stablemirror.oci.names import is_valid_tag, validate_name
from stablemirror.oci.patterns import fnmatch_match
from stablemirror.registry.protocol import RequestContext
from stablemirror.releases import store
from stablemirror.releases.config import ReleaseNamespace, ReleaseSettings
from stablemirror.releases.identity import client_address, client_identity, via_mirror
from stablemirror.releases.rules import (
    Entry,
    admits,
    describe_rule,
    parse_weights,
    resolve,
    rollback_target,
    rule_for,
    validate_channel_name,
)
from stablemirror.releases.semver import (
    Version,
    floating_targets,
    is_floating_tag,
    ordered,
    parse_version,
)

log = logging.getLogger("stablemirror.releases")


def _version(text: str, field: str = "version") -> Version:
    v = parse_version(text)
    if v is None:
        raise ReleaseInvalid(field=field, version=text,
                             reason="not a SemVer 2.0 version (write +build as _build)")
    return v


class ReleaseService:
    def __init__(self, db: Database, settings: ReleaseSettings, metrics: Metrics,
                 audit: AuditSink | None, events: EventSink | None = None) -> None:
        """`audit`: when given, pulls are recorded through it and every channel move
        appends its audit record in the move's own transaction. `events`: a promotion
        publishes a `promote` event there once committed (docs/notifications.md)."""
        self.db = db
        self._channel_query = store.channel_query()  # the hot read, built once
        self.settings = settings
        self.metrics = metrics
        self.audit = audit
        self.events = events
        self._pulls: dict[tuple[str, str], tuple[int, float]] = {}
        # Set by the composition root on a mirror: channels of proxied repositories live
        # upstream, so moves are refused here.
        self.is_hosted: Callable[[str], bool] = lambda _repository: True
        self._flusher: asyncio.Task[None] | None = None

    def namespace(self, repository: str) -> ReleaseNamespace:
        return self.settings.namespace(repository)

    def identity(self, ctx: RequestContext) -> str:
        address = client_address(ctx.client, ctx.forwarded_for, self.settings.trusted_proxies)
        return client_identity(ctx.actor, ctx.client_id, address, ctx.via)

    @staticmethod
    def actor(ctx: RequestContext) -> str:
        return ctx.actor or f"anonymous@{ctx.client}"

    def _event(self, ctx: RequestContext, action: str, repository: str, reference: str,
               digest: str = "", **detail: Any) -> AuditEvent:
        return AuditEvent(action=action, actor=ctx.actor or "", client=ctx.client,
                          user_agent=ctx.user_agent, request_id=ctx.request_id,
                          repository=repository, reference=reference, digest=digest,
                          detail=detail)

    # -- pulls ------------------------------------------------------------------------------
    async def resolve(self, ctx: RequestContext, repository: str, tag: str
                      ) -> Entry | None:
        """The version this client gets for `tag` if it is a channel of `repository`."""
        if not is_valid_tag(tag) or parse_version(tag) is not None or is_floating_tag(tag):
            return None  # versions and floating tags are never channels: no query
        row = await self.db.read_row(self._channel_query, repo=repository, name=tag)
        entries = None if row is None else store.load_entries(row[0])
        if not entries:
            return None
        return resolve(repository, tag, self.identity(ctx), entries)

    async def pulled(self, ctx: RequestContext, repository: str, channel: str | None,
                     version: str, digest: str) -> None:
        """Count a pull of `version` (through `channel`, or its own tag) and audit it."""
        self.metrics.release_pull(repository, channel or "none", version)
        n, _ = self._pulls.get((repository, version), (0, 0.0))
        self._pulls[(repository, version)] = (n + 1, time.time())
        if self.audit is None or channel is None:
            return
        if ctx.method == "HEAD" and not via_mirror(ctx.via):
            return  # a client's HEAD reads nothing; a mirror's HEAD is how it pulls
        await self.audit(self._event(ctx, "manifest.pull", repository, channel, digest,
                                     channel=channel, version=version,
                                     identity=self.identity(ctx),
                                     method=ctx.method))

    async def flush_pulls(self) -> None:
        pending, self._pulls = self._pulls, {}
        if not pending:
            return
        try:
            await self.db.write(lambda c: store.add_pulls(c, self.db.insert, pending))
        except BaseException:
            for key, (n, last) in pending.items():  # kept for the next flush
                m, later = self._pulls.get(key, (0, 0.0))
                self._pulls[key] = (n + m, max(last, later))
            raise

    async def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.settings.pull_flush_seconds)
                try:
                    await self.flush_pulls()
                except Exception:  # a flush failure must not end the loop
                    log.exception("release pull counts not written")
        self._flusher = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_pulls()

    # -- pushes -----------------------------------------------------------------------------
    async def check_push(self, repository: str, tags: list[str], digest: str) -> list[str]:
        """Refuse tags a release rule protects; return the floating tags this push moves."""
        ns = self.namespace(repository)
        return await self.db.read(lambda c: self._check_push(c, ns, repository, tags, digest))

    def _check_push(self, c: Connection, ns: ReleaseNamespace, repository: str,
                    tags: list[str], digest: str) -> list[str]:
        rid = store.repo_id(c, repository)
        existing = store.tags(c, rid) if rid is not None else {}
        channels = store.channels(c, rid) if rid is not None else {}
        for tag in tags:
            if tag in channels:
                raise TagInvalid(tag=tag, reason=f"{tag} is a release channel: move it with "
                                 "`stablemirror release promote`, do not push it")
            version = parse_version(tag)
            immutable = (version is not None and ns.version_tags_immutable) or any(
                fnmatch_match(p, tag) for p in ns.immutable_tags)
            old = existing.get(tag)
            if immutable and old is not None and old[0] != digest:
                what = f"version {tag}" if version is not None else f"tag {tag}"
                raise TagInvalid(tag=tag, current=old[0], pushed=digest,
                                 reason=f"{what} is immutable: it already points at {old[0]}")
        if not ns.floating_tags:
            return []
        pushed = {v.tag for t in tags if (v := parse_version(t)) is not None and v.is_release}
        if not pushed:
            return []
        versions = [v for t in [*existing, *pushed] if (v := parse_version(t)) is not None]
        return sorted(f for f, v in floating_targets(versions).items()
                      if v.tag in pushed and f not in tags)

    # -- channel moves ----------------------------------------------------------------------
    async def promote(self, ctx: RequestContext, repository: str, version: str,
                      channel: str, force: bool = False, reason: str = "") -> dict[str, Any]:
        self._hosted(repository, channel)
        v = _version(version)
        self._admit(repository, channel, v, force)

        def run(c: Connection) -> store.HistoryRow:
            rid, digests = self._versions(c, repository)
            after = (Entry(v.tag, self._digest(digests, v, "version"), 100),)
            return self._move(c, ctx, repository, rid, channel, "promote", after, reason, force)

        row = await self.db.write(run)
        if self.events is not None:
            await self.events.accept(RegistryEvent(
                action="promote", repository=repository, digest=row.to_entries[0].digest,
                channel=channel, actor=ctx.actor or "", client=ctx.client,
                user_agent=ctx.user_agent, request_id=ctx.request_id))
        return row.to_json()

    async def split(self, ctx: RequestContext, repository: str, channel: str,
                    weights: dict[str, object], force: bool = False, reason: str = ""
                    ) -> dict[str, Any]:
        self._hosted(repository, channel)
        parsed = parse_weights(weights)
        versions = {text: _version(text, "weights") for text in parsed}
        if len({v.tag for v in versions.values()}) != len(versions):
            raise ReleaseInvalid(field="weights", reason="a version is named twice")
        for v in versions.values():
            self._admit(repository, channel, v, force)

        def run(c: Connection) -> store.HistoryRow:
            rid, digests = self._versions(c, repository)
            after = tuple(Entry(v.tag, self._digest(digests, v, "weights"), parsed[text])
                          for text, v in versions.items() if parsed[text] > 0)
            return self._move(c, ctx, repository, rid, channel, "split", after, reason, force)

        return (await self.db.write(run)).to_json()

    async def rollback(self, ctx: RequestContext, repository: str, channel: str,
                       to: str | None = None, reason: str = "") -> dict[str, Any]:
        self._hosted(repository, channel)
        target = _version(to, "to") if to else None
        if target is not None:
            self._admit(repository, channel, target, False)

        def run(c: Connection) -> store.HistoryRow:
            rid, digests = self._versions(c, repository)
            if channel not in store.channels(c, rid):
                raise ReleaseInvalid(field="channel", channel=channel,
                                     reason=f"{repository} has no channel {channel}")
            if target is not None:
                after: tuple[Entry, ...] = (Entry(target.tag,
                                                  self._digest(digests, target, "to"), 100),)
                action = "rollback_to"
            else:
                rows = store.history(c, rid, channel)
                found = rollback_target([(h.action, h.to_entries) for h in rows])
                if found is None:
                    raise ReleaseInvalid(field="channel", channel=channel,
                                         reason="no previous entry to roll back to")
                for e in found:
                    if digests.get(e.version) != e.digest:
                        raise ReleaseInvalid(field="channel", version=e.version,
                                             reason="the previous entry's version is gone")
                after, action = found, "rollback"
            return self._move(c, ctx, repository, rid, channel, action, after, reason, False)

        return (await self.db.write(run)).to_json()

    def _hosted(self, repository: str, channel: str) -> None:
        validate_name(repository)
        validate_channel_name(channel)
        if not self.is_hosted(repository):
            raise ReleaseInvalid(field="repository", repository=repository,
                                 reason="a proxied repository: move its channels upstream")

    def _admit(self, repository: str, channel: str, v: Version, force: bool) -> None:
        rule = rule_for(channel, self.namespace(repository).channels)
        if not force and not admits(rule, v):
            raise ReleaseInvalid(field="version", version=str(v), channel=channel,
                                 reason=f"channel {channel} takes {describe_rule(rule)}; "
                                        "--force overrides (and is audited)")

    @staticmethod
    def _versions(c: Connection, repository: str) -> tuple[int, dict[str, str]]:
        rid = store.repo_id(c, repository)
        if rid is None:
            raise ReleaseInvalid(field="repository", repository=repository,
                                 reason="no such repository")
        return rid, store.version_tags(c, rid)

    @staticmethod
    def _digest(digests: dict[str, str], v: Version, field: str) -> str:
        digest = digests.get(v.tag)
        if digest is None:
            raise ReleaseInvalid(field=field, version=str(v),
                                 reason=f"version {v} was never pushed to this repository")
        return digest

    def _move(self, c: Connection, ctx: RequestContext, repository: str, rid: int,
              channel: str, action: str, after: tuple[Entry, ...], reason: str,
              forced: bool) -> store.HistoryRow:
        channels = store.channels(c, rid)
        if channel not in channels and channel in store.tags(c, rid):
            raise ReleaseInvalid(field="channel", channel=channel,
                                 reason=f"{repository} has a tag {channel}: a channel "
                                        "cannot take a tag's name (delete the tag first)")
        before = channels.get(channel, ())
        row = store.move(c, self.db.insert, rid, channel, action, self.actor(ctx), before,
                         after, reason, forced)
        if self.audit is not None:
            append_audit(c, self._event(
                ctx, f"channel.{action}", repository, channel,
                after[0].digest if len(after) == 1 else "",
                **{"from": [e.to_json() for e in before], "to": [e.to_json() for e in after],
                   "reason": reason, "forced": forced}))
        return row

    # -- reading ----------------------------------------------------------------------------
    async def history(self, repository: str, channel: str | None) -> list[dict[str, Any]]:
        validate_name(repository)

        def run(c: Connection) -> list[dict[str, Any]]:
            rid = store.repo_id(c, repository)
            if rid is None:
                raise ReleaseInvalid(field="repository", repository=repository,
                                     reason="no such repository")
            return [h.to_json() for h in store.history(c, rid, channel)]

        return await self.db.read(run)

    async def versions(self, repository: str) -> dict[str, Any]:
        """Versions in SemVer order with their channels, floating tags and pull counts."""
        validate_name(repository)
        await self.flush_pulls()

        def run(c: Connection) -> dict[str, Any]:
            rid = store.repo_id(c, repository)
            if rid is None:
                raise ReleaseInvalid(field="repository", repository=repository,
                                     reason="no such repository")
            return _listing(store.tags(c, rid), store.channels(c, rid), store.pulls(c, rid),
                            store.annotation_versions(c, rid))

        return await self.db.read(run)

    async def channel_names(self, repository: str) -> list[str]:
        def run(c: Connection) -> list[str]:
            rid = store.repo_id(c, repository)
            return [] if rid is None else list(store.channels(c, rid))
        return await self.db.read(run)


def _listing(tags: dict[str, tuple[str, float]], channels: dict[str, tuple[Entry, ...]],
             pulls: dict[str, tuple[int, float]], annotations: dict[str, str]
             ) -> dict[str, Any]:
    versions = ordered([v for t in tags if (v := parse_version(t)) is not None])
    rows = []
    for v in versions:
        digest, pushed_at = tags[v.tag]
        n, last = pulls.get(v.tag, (0, None))
        rows.append({
            "version": v.tag, "semver": annotations.get(digest, str(v)), "digest": digest,
            "pushed_at": pushed_at, "prerelease": not v.is_release,
            "channels": [{"channel": name, "weight": e.weight}
                         for name, entries in channels.items() for e in entries
                         if e.version == v.tag],
            "floating": sorted(t for t, (d, _) in tags.items()
                               if is_floating_tag(t) and d == digest),
            "pulls": n, "last_pulled_at": last})
    return {"versions": rows,
            "channels": {name: [e.to_json() for e in entries]
                         for name, entries in channels.items()}}
