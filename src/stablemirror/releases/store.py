"""SQL of release channels (index/schema_releases.py), as functions on a Connection so the
service composes one transaction per change: read the current state, check, write the
new pointer, its history row and its audit record together."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, and_, bindparam, func, select

from stablemirror.index import schema as s
from stablemirror.index import schema_releases as r
from stablemirror.releases.rules import Entry
from stablemirror.releases.semver import parse_version


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    channel: str
    time: float
    actor: str
    action: str
    from_entries: tuple[Entry, ...]
    to_entries: tuple[Entry, ...]
    reason: str
    forced: bool

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "channel": self.channel, "time": self.time, "actor": self.actor,
                "action": self.action, "from": [e.to_json() for e in self.from_entries],
                "to": [e.to_json() for e in self.to_entries], "reason": self.reason,
                "forced": self.forced}


def dump_entries(entries: Iterable[Entry]) -> str:
    return json.dumps([e.to_json() for e in entries], separators=(",", ":"))


def load_entries(text: str) -> tuple[Entry, ...]:
    return tuple(Entry(str(e["version"]), str(e["digest"]), int(e["weight"]))
                 for e in json.loads(text))


def repo_id(c: Connection, repository: str) -> int | None:
    return c.execute(select(s.repositories.c.id)
                     .where(s.repositories.c.name == repository)).scalar()


def channel_query() -> Select[Any]:
    """The hot read: is this tag a channel of the repository, and where does it point.
    Built once (ReleaseService) and run with `Database.read_row(repo=, name=)`."""
    return (select(r.release_channels.c.entries)
            .join(s.repositories, s.repositories.c.id == r.release_channels.c.repo_id)
            .where(s.repositories.c.name == bindparam("repo"),
                   r.release_channels.c.name == bindparam("name")))


def channels(c: Connection, rid: int) -> dict[str, tuple[Entry, ...]]:
    rows = c.execute(select(r.release_channels.c.name, r.release_channels.c.entries)
                     .where(r.release_channels.c.repo_id == rid)
                     .order_by(r.release_channels.c.name)).all()
    return {name: load_entries(text) for name, text in rows}


def tags(c: Connection, rid: int) -> dict[str, tuple[str, float]]:
    """Every tag: name -> (digest, updated_at)."""
    rows = c.execute(select(s.tags.c.name, s.tags.c.manifest_digest, s.tags.c.updated_at)
                     .where(s.tags.c.repo_id == rid)).all()
    return {name: (digest, at) for name, digest, at in rows}


def version_tags(c: Connection, rid: int) -> dict[str, str]:
    """Version tags -> digest."""
    return {t: d for t, (d, _) in tags(c, rid).items() if parse_version(t) is not None}


def tag_digest(c: Connection, repository: str, tag: str) -> str | None:
    q = (select(s.tags.c.manifest_digest)
         .join(s.repositories, s.repositories.c.id == s.tags.c.repo_id)
         .where(s.repositories.c.name == repository, s.tags.c.name == tag))
    return c.execute(q).scalar()


def annotation_versions(c: Connection, rid: int) -> dict[str, str]:
    """digest -> org.opencontainers.image.version annotation, where manifests carry one."""
    rows = c.execute(select(s.manifests.c.digest, s.manifests.c.annotations)
                     .where(s.manifests.c.repo_id == rid,
                            s.manifests.c.annotations.is_not(None))).all()
    out = {}
    for digest, text in rows:
        try:
            value = json.loads(text).get("org.opencontainers.image.version")
        except (ValueError, AttributeError):
            continue
        if isinstance(value, str):
            out[digest] = value
    return out


def history(c: Connection, rid: int, name: str | None) -> list[HistoryRow]:
    h = r.release_history
    q = select(h).where(h.c.repo_id == rid).order_by(h.c.id)
    if name is not None:
        q = q.where(h.c.channel == name)
    return [HistoryRow(row.id, row.channel, row.time, row.actor, row.action,
                       load_entries(row.from_entries), load_entries(row.to_entries),
                       row.reason, bool(row.forced))
            for row in c.execute(q).all()]


def move(c: Connection, insert: Any, rid: int, name: str, action: str, actor: str,
         before: tuple[Entry, ...], after: tuple[Entry, ...], reason: str,
         forced: bool) -> HistoryRow:
    now = time.time()
    text = dump_entries(after)
    c.execute(insert(r.release_channels)
              .values(repo_id=rid, name=name, entries=text, updated_at=now, updated_by=actor)
              .on_conflict_do_update(index_elements=["repo_id", "name"],
                                     set_={"entries": text, "updated_at": now,
                                           "updated_by": actor}))
    result = c.execute(r.release_history.insert().values(
        repo_id=rid, channel=name, time=now, actor=actor, action=action,
        from_entries=dump_entries(before), to_entries=text, reason=reason, forced=forced))
    key = result.inserted_primary_key
    return HistoryRow(int(key[0]) if key else 0, name, now, actor, action, before, after,
                      reason, forced)


def add_pulls(c: Connection, insert: Any, counts: dict[tuple[str, str], tuple[int, float]]
              ) -> None:
    for (repository, version), (n, last) in counts.items():
        rid = repo_id(c, repository)
        if rid is None:
            continue
        stmt = insert(r.release_pulls).values(repo_id=rid, version=version, pulls=n,
                                              last_pulled_at=last)
        c.execute(stmt.on_conflict_do_update(
            index_elements=["repo_id", "version"],
            set_={"pulls": r.release_pulls.c.pulls + n, "last_pulled_at": last}))


def pulls(c: Connection, rid: int) -> dict[str, tuple[int, float]]:
    rows = c.execute(select(r.release_pulls.c.version, r.release_pulls.c.pulls,
                            r.release_pulls.c.last_pulled_at)
                     .where(r.release_pulls.c.repo_id == rid)).all()
    return {v: (n, at) for v, n, at in rows}


def repositories_under(c: Connection, prefix: str) -> list[str]:
    q = select(s.repositories.c.name).order_by(s.repositories.c.name)
    if prefix:
        q = q.where(s.repositories.c.name.startswith(prefix, autoescape=True))
    return list(c.execute(q).scalars())


def other_tags_of(c: Connection, rid: int, digest: str, tag: str) -> int:
    return int(c.execute(select(func.count()).select_from(s.tags).where(
        and_(s.tags.c.repo_id == rid, s.tags.c.manifest_digest == digest,
             s.tags.c.name != tag))).scalar() or 0)
