"""One run of a replication rule: walk the source's catalog and tag lists page by page,
copy what the filters admit and the destination lacks (ImageCopier: a HEAD per tag first),
propagate deletes when configured, move release channels at a stablemirror destination;
record status and metrics as it goes (docs/replication.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from stablemirror.client import listing
from stablemirror.client.registry import RegistryClient
from stablemirror.metrics import Metrics
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import OCIError
from stablemirror.replication.channels import (
    Channels,
    move_channel,
    release_channels,
    same_channel,
)
from stablemirror.replication.config import SELF, Credentials, Rule
from stablemirror.replication.copier import ImageCopier
from stablemirror.replication.endpoint import TransferSettings

if TYPE_CHECKING:  # SQLAlchemy: not on a node's sqlite3 index (compose/index.py)
    from stablemirror.index.sql_replication import SqlReplicationStatus
from stablemirror.replication.filters import TagFilter, parse_tag_filter, repository_matches
from stablemirror.replication.pacing import RateLimit
from stablemirror.replication.registry_endpoint import RegistryEndpoint

log = logging.getLogger("stablemirror.replication")
Trigger = Literal["cron", "manual", "event"]
FLUSH_SECONDS = 1.0
SIG_ARTIFACT = "application/vnd.dev.cosign.artifact.sig.v1+json"


def registry_of(end: str, self_registry: str) -> tuple[str, bool]:
    """(host[:port], plain HTTP) of a rule's end."""
    if end == SELF:
        return self_registry, True
    if end.startswith("http://"):
        return end.removeprefix("http://"), True
    return end.removeprefix("https://"), False


def _creds(c: Credentials | None) -> tuple[str, str] | None:
    return (c.username, c.password) if c is not None else None


@dataclass
class RunResult:
    rule: str
    trigger: str
    dry_run: bool
    copied: list[dict[str, str]] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[dict[str, str]] = field(default_factory=list)
    unsigned_skipped: int = 0
    channels: list[dict[str, str]] = field(default_factory=list)
    pending_bytes: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "trigger": self.trigger, "dry_run": self.dry_run,
                "copied": self.copied, "unchanged": self.unchanged, "deleted": self.deleted,
                "unsigned_skipped": self.unsigned_skipped, "channels": self.channels,
                "pending_bytes": self.pending_bytes, "bytes": self.bytes,
                "errors": self.errors}


class RuleRun:
    def __init__(self, rule: Rule, self_registry: str,
                 status: SqlReplicationStatus | None = None, metrics: Metrics | None = None,
                 keep_going: Callable[[], bool] = lambda: True) -> None:
        self.rule = rule
        self.self_registry = self_registry
        self.status = status
        self.metrics = metrics
        self.keep_going = keep_going
        self.tags: TagFilter = parse_tag_filter(rule.filters.tags)
        self._current: dict[str, dict[str, Any]] = {}
        self._dirty = False

    # -- ends --------------------------------------------------------------------------------
    def _client(self, end: str, creds: Credentials | None) -> RegistryClient:
        registry, plain = registry_of(end, self.self_registry)
        return RegistryClient(registry, insecure=plain, credentials=_creds(creds),
                              timeout=3600)

    def _copier(self, src: RegistryEndpoint, dst: RegistryEndpoint) -> ImageCopier:
        r = self.rule
        settings = TransferSettings(chunk_size=r.chunk_size_mib << 20,
                                    parallel_streams=r.parallel_streams,
                                    bandwidth_limit=r.rate)
        return ImageCopier(src, dst, settings, platforms=r.filters.platforms,
                           parallel_blobs=r.parallel_blobs, progress=self._progress)

    def _progress(self, digest: Digest, done: int, total: int) -> None:
        self._current[str(digest)] = {"digest": str(digest), "done": done, "total": total}
        if done >= total:
            self._current.pop(str(digest), None)
        self._dirty = True

    async def _flush(self) -> None:
        while self.status is not None:
            await asyncio.sleep(FLUSH_SECONDS)
            if self._dirty:
                self._dirty = False
                with contextlib.suppress(Exception):
                    await self.status.update(self.rule.name,
                                             current=list(self._current.values()))

    # -- a run -------------------------------------------------------------------------------
    async def run(self, trigger: Trigger, dry_run: bool = False,
                  only: tuple[str, str] | None = None, repository: str | None = None,
                  delete: tuple[str, str] | None = None) -> RunResult:
        """The whole rule; or for an event: `only` one source repository and tag or digest,
        one `repository` (a channel moved), or the `delete` of a tag or digest. Raises after
        recording the failure, so the job is retried. (Events still queued count in the
        lag through their jobs: compose/replication.py.)"""
        result = RunResult(self.rule.name, trigger, dry_run)
        started = time.time()
        previous = await self.status.get(self.rule.name) if self.status else None
        if self.status is not None and not dry_run:
            await self.status.update(self.rule.name, last_started=started,
                                     last_trigger=trigger, current=[])
        src_client = self._client(self.rule.source, self.rule.credentials.source)
        dst_client = self._client(self.rule.destination, self.rule.credentials.destination)
        limit = RateLimit(self.rule.rate) if self.rule.rate else None
        src, dst = RegistryEndpoint(src_client, limit), RegistryEndpoint(dst_client)
        flusher = asyncio.ensure_future(self._flush())
        try:
            copier = self._copier(src, dst)
            walk = _Walk(self, copier, src, dst, result, dry_run)
            walk.previous_success = previous.last_success if previous else None
            if only is not None:
                await walk.one(*only)
            elif repository is not None:
                await walk.repository(repository)
            elif delete is not None:
                await walk.delete_one(*delete)
            else:
                await walk.everything()
            result.bytes = copier.report.bytes_copied
        except Exception as e:
            result.errors.append(f"{type(e).__name__}: {e}")
            await self._finish(result, started, dry_run)
            raise
        finally:
            flusher.cancel()
            with contextlib.suppress(BaseException):
                await flusher
            await src.close()
            await dst.close()
        await self._finish(result, started, dry_run)
        return result

    async def _finish(self, result: RunResult, started: float, dry_run: bool) -> None:
        name = self.rule.name
        failed = bool(result.errors)
        if self.metrics is not None and not dry_run:
            self.metrics.replication_copied(name, len(result.copied), result.bytes)
            if failed:
                self.metrics.replication_failure(name)
        if self.status is None:
            return
        if dry_run:
            await self.status.update(name, pending_artifacts=len(result.copied),
                                     pending_bytes=result.pending_bytes)
            return
        done = {"last_finished": time.time(), "current": [],
                "add_artifacts": len(result.copied), "add_bytes": result.bytes}
        if failed:
            await self.status.update(name, last_error=result.errors[0][:2000], **done)
        else:
            await self.status.update(name, last_success=started, last_error=None,
                                     pending_artifacts=0, pending_bytes=0,
                                     oldest_pending=None, **done)
        if self.metrics is not None:
            row = await self.status.get(name)
            if row is not None:
                self.metrics.set_replication_lag(name, row.lag(time.time()))


class _Walk:
    """The walk of one run over the source (page by page) and its effects."""

    def __init__(self, run: RuleRun, copier: ImageCopier, src: RegistryEndpoint,
                 dst: RegistryEndpoint, result: RunResult, dry_run: bool) -> None:
        self.run = run
        self.rule = run.rule
        self.copier = copier
        self.src = src
        self.dst = dst
        self.result = result
        self.dry_run = dry_run
        self.previous_success: float | None = None
        self._marked = False

    def destination_of(self, repository: str) -> str:
        return self.rule.destination_prefix + repository

    async def everything(self) -> None:
        async for page in listing.catalog(self.src.client):
            for repository in page:
                if not self.run.keep_going():
                    raise asyncio.CancelledError()
                if repository_matches(repository, self.rule.filters.repositories):
                    await self.repository(repository)

    async def one(self, repository: str, reference: str) -> None:
        if not repository_matches(repository, self.rule.filters.repositories):
            return
        if ":" in reference or self.run.tags.admits(reference):
            await self.tag(repository, reference, None)

    async def repository(self, repository: str) -> None:
        target = self.destination_of(repository)
        src_channels = await self._channels(self.src.client, repository,
                                            self.rule.credentials.source)
        dst_channels = await self._channels(self.dst.client, target,
                                            self.rule.credentials.destination)
        wanted = self._channel_versions(src_channels)
        pointer_names = set(src_channels or {}) if dst_channels is not None else set()
        seen: set[str] = set()
        digests: set[Digest] = set()
        async for page in self.src.tag_pages(repository):
            for tag in page:
                seen.add(tag)
                if tag in pointer_names or not self.run.tags.admits(tag):
                    continue
                if wanted is not None and tag not in wanted:
                    continue
                digest = await self.tag(repository, tag, src_channels)
                if digest is not None:
                    digests.add(digest)
        if src_channels and dst_channels is not None:
            await self._move_channels(target, src_channels, dst_channels)
        if self.rule.delete == "propagate":
            await self._deletes(target, seen, digests)

    def _channel_versions(self, channels: Channels | None) -> set[str] | None:
        if not self.rule.filters.channels:
            return None
        chosen = {c: e for c, e in (channels or {}).items() if c in self.rule.filters.channels}
        versions = {str(e["version"]) for entries in chosen.values() for e in entries}
        return versions | set(chosen)  # channel tags too, for a non-stablemirror destination

    async def _channels(self, client: RegistryClient, repository: str,
                        creds: Credentials | None) -> Channels | None:
        try:
            return await release_channels(client, repository, _creds(creds))
        except (OSError, ValueError, TimeoutError, OCIError) as e:
            log.debug("no release channels at %s: %s", client.registry, e)
            return None
        except Exception as e:  # aiohttp's errors: the registry has no release API for us
            log.debug("no release channels at %s: %s", client.registry, e)
            return None

    async def tag(self, repository: str, reference: str, _channels: Channels | None
                  ) -> Digest | None:
        """Copy one tag (or digest) unless unchanged; None if the source lacks it."""
        target = self.destination_of(repository)
        digest = await self.src.head_manifest(repository, reference)
        if digest is None:
            return None
        is_tag = ":" not in reference
        if is_tag and await self.dst.head_manifest(target, reference) == digest \
                and self.copier.platforms is None:
            self.result.unchanged += 1
            if not self.dry_run:
                await self.copier.copy(repository, reference, target)  # referrers, sigs
            return digest
        if self.rule.filters.signed_only and not await self._signed(repository, digest):
            self.result.unsigned_skipped += 1
            return digest
        await self._mark_pending()
        if self.dry_run:
            self.result.pending_bytes += await self._size(repository, digest)
        else:
            before = self.copier.report.manifests_copied
            await self.copier.copy(repository, reference, target)
            if self.copier.report.manifests_copied == before:
                self.result.unchanged += 1
                return digest
        self.result.copied.append({"repository": repository, "reference": reference,
                                   "destination": target, "digest": str(digest)})
        return digest

    async def _mark_pending(self) -> None:
        """A change found: until the run succeeds, the lag counts from the previous
        successful run (the change is newer than it)."""
        status = self.run.status
        if self._marked or status is None or self.dry_run:
            return
        self._marked = True
        await status.update(self.rule.name,
                            oldest_pending=self.previous_success or time.time())

    async def _signed(self, repository: str, digest: Digest) -> bool:
        if await self.src.head_manifest(repository,
                                        f"{digest.algorithm}-{digest.hex}.sig") is not None:
            return True
        listed = await self.src.referrers(repository, digest) or []
        return any(e.get("artifactType") == SIG_ARTIFACT for e in listed)

    async def _size(self, repository: str, digest: Digest) -> int:
        from stablemirror.oci.manifest import parse_manifest

        fetched = await self.src.get_manifest(repository, str(digest))
        if fetched is None:
            return 0
        m = parse_manifest(fetched.content, fetched.media_type)
        total = len(fetched.content)
        target = self.destination_of(repository)
        for blob in m.blobs:
            if not await self.dst.has_blob(target, blob.digest):
                total += blob.size
        for child in m.children:
            total += await self._size(repository, child.digest)
        return total

    async def _move_channels(self, target: str, src_channels: Channels,
                             dst_channels: Channels) -> None:
        for name, entries in src_channels.items():
            if self.rule.filters.channels and name not in self.rule.filters.channels:
                continue
            if same_channel(entries, dst_channels.get(name, [])):
                continue
            self.result.channels.append({"repository": target, "channel": name})
            if not self.dry_run:
                await move_channel(self.dst.client, target, name, entries,
                                   _creds(self.rule.credentials.destination),
                                   f"replicated by rule {self.rule.name}")

    async def delete_one(self, repository: str, reference: str) -> None:
        """An event's delete: gone at the source (not pushed again since), so gone at the
        destination: by tag where the registry can, else by digest."""
        if self.rule.delete != "propagate":
            return
        target = self.destination_of(repository)
        if await self.src.head_manifest(repository, reference) is not None:
            return  # pushed again since the delete: the push's own event copies it
        digest = await self.dst.head_manifest(target, reference)
        if digest is None:
            return
        self.result.deleted.append({"repository": target, "tag": reference,
                                    "digest": str(digest)})
        if self.dry_run:
            return
        try:
            await self.dst.client.delete_manifest(target, reference)
        except OCIError:
            if ":" in reference or await self.src.head_manifest(repository,
                                                                str(digest)) is None:
                await self.dst.delete_manifest(target, digest)

    async def _deletes(self, target: str, at_source: set[str],
                       kept: set[Digest]) -> None:
        """Tags the filters admit that the destination has and the source no longer has.
        A DELETE by tag where the registry supports it; else by digest, unless a tag still
        at the source points at that digest (deleting it would take that tag too)."""
        doomed: list[str] = []
        async for page in self.dst.tag_pages(target):
            doomed += [t for t in page if t not in at_source and self.run.tags.admits(t)]
        for tag in doomed:
            digest = await self.dst.head_manifest(target, tag)
            if digest is None:
                continue
            self.result.deleted.append({"repository": target, "tag": tag,
                                        "digest": str(digest)})
            if self.dry_run:
                continue
            try:
                await self.dst.client.delete_manifest(target, tag)
            except OCIError:
                if digest not in kept:
                    await self.dst.delete_manifest(target, digest)
