"""Upstream registries: an HTTP client per upstream, grouped with failover and health.

A group behaves like an nginx upstream block: primaries are tried first (weighted
round robin), backups only when every primary is down; an upstream that fails
`max_fails` times within `fail_timeout` (connect error, timeout, 5xx, 429) is skipped
for `fail_timeout`; an optional active check (`GET /v2/`) brings it back sooner.
404, 401/403 and 508 (the request looped) are answers, not failures: they end the search.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlencode, urlsplit

import aiohttp

from stablemirror.client.auth import TokenRefused, parse_challenge, request_token
from stablemirror.metrics import UpstreamResult
from stablemirror.mirror.config import UpstreamGroupSettings, UpstreamSettings
from stablemirror.mirror.events import (
    FailedOver,
    MirrorEvent,
    MirrorListener,
    UpstreamHealthChanged,
    UpstreamRequested,
)
from stablemirror.oci import mediatypes as mt

log = logging.getLogger("stablemirror.upstream")
T = TypeVar("T")

MANIFEST_ACCEPT = ", ".join(sorted(mt.MANIFESTS))


class UpstreamFailure(Exception):
    """This upstream could not answer (network, timeout, 5xx, 429): try another."""

    def __init__(self, upstream: str, reason: str) -> None:
        super().__init__(upstream, reason)
        self.upstream = upstream
        self.reason = reason


class UpstreamAnswer(Exception):
    """An authoritative non-success answer (404, 401, 403): do not fail over."""

    def __init__(self, upstream: str, status: int) -> None:
        super().__init__(upstream, status)
        self.upstream = upstream
        self.status = status


class NoUpstreamAvailable(Exception):
    def __init__(self, group: str, reasons: list[str]) -> None:
        super().__init__(group, reasons)
        self.group = group
        self.reasons = reasons


@dataclass
class _Health:
    failures: list[float] = field(default_factory=list)
    down_until: float = 0.0

    def is_up(self, now: float) -> bool:
        return now >= self.down_until


@dataclass(frozen=True, slots=True)
class ManifestReply:
    upstream: str
    digest: str | None
    media_type: str
    body: bytes  # empty for HEAD
    # Stablemirror-Channel: the tag is a release channel upstream, resolved for the
    # identity we sent (releases/); such a tag is never cached as one digest for all.
    channel: str | None = None




def with_ns(path: str, ns: str) -> str:
    """`path?ns=<registry>` when a client named the registry that way (containerd)."""
    return f"{path}?{urlencode({'ns': ns})}" if ns else path


def _scope_key(path: str) -> str:
    return path.split("/manifests/")[0].split("/blobs/")[0]


class HttpClient:
    """The one aiohttp client session for upstream traffic, opened when the loop runs."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HTTP client used before start()")
        return self._session

    async def start(self) -> None:
        # Blobs must arrive byte for byte: never let the client undo a Content-Encoding.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=64, ttl_dns_cache=60),
            auto_decompress=False, read_bufsize=1 << 20)  # fewer, larger reads of blobs

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class Upstream:
    def __init__(self, settings: UpstreamSettings, group: UpstreamGroupSettings,
                 client: HttpClient, via: str) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.name = urlsplit(self.base).netloc or self.base
        self.client = client
        self.via = via
        self.connect_timeout = group.connect_timeout
        self.first_byte_timeout = group.first_byte_timeout
        self.read_timeout = group.read_timeout
        self.health = _Health()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic: aiohttp.BasicAuth | None = None  # set once an upstream asks for Basic

    def repository(self, name: str) -> str:
        return f"{self.settings.prefix}{name}"

    async def request(self, method: str, path: str, headers: dict[str, str],
                      via: str) -> aiohttp.ClientResponse:
        """Send one request, answering a token challenge once. Caller releases the response."""
        scope_key = _scope_key(path)
        for attempt in range(2):
            hdrs = self.request_headers(headers, via, path)
            try:
                response = await asyncio.wait_for(
                    self.client.session.request(method, self.base + path, headers=hdrs,
                                         timeout=aiohttp.ClientTimeout(
                                             total=None, connect=self.connect_timeout,
                                             sock_read=self.read_timeout)),
                    timeout=self.first_byte_timeout)
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise UpstreamFailure(self.name, type(e).__name__) from e
            if response.status == 401 and attempt == 0:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.release()
                await self._authenticate(challenge, scope_key)
                continue
            if response.status == 508:  # the request looped back through us: an answer
                response.release()
                raise UpstreamAnswer(self.name, 508)
            if response.status >= 500 or response.status == 429:
                response.release()
                raise UpstreamFailure(self.name, f"http_{response.status}")
            if response.status in (401, 403, 404):
                response.release()
                raise UpstreamAnswer(self.name, response.status)
            return response
        raise UpstreamAnswer(self.name, 401)

    def request_headers(self, headers: dict[str, str], via: str, path: str) -> dict[str, str]:
        """`headers` plus Via and the credentials this upstream last asked for `path`."""
        hdrs = dict(headers)
        hdrs["Via"] = f"{via}, {self.via}" if via else self.via
        token = self._tokens.get(_scope_key(path))
        if token and token[1] > time.monotonic():
            hdrs["Authorization"] = f"Bearer {token[0]}"
        elif self._basic is not None:
            hdrs["Authorization"] = self._basic.encode()
        return hdrs

    async def manifest(self, repository: str, reference: str, method: str,
                       via: str, ns: str = "", client_id: str = "") -> ManifestReply:
        """`client_id`: the identity we serve, sent as Stablemirror-Client-Id so an
        upstream release channel resolves for that client (releases/identity.py)."""
        path = with_ns(f"/v2/{self.repository(repository)}/manifests/{reference}", ns)
        headers = {"Accept": MANIFEST_ACCEPT}
        if client_id:
            headers["Stablemirror-Client-Id"] = client_id
        response = await self.request(method, path, headers, via)
        try:
            body = await response.read() if method == "GET" else b""
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise UpstreamFailure(self.name, type(e).__name__) from e
        finally:
            response.release()
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return ManifestReply(self.name, response.headers.get("Docker-Content-Digest"),
                             media_type, body, response.headers.get("Stablemirror-Channel"))

    async def _authenticate(self, challenge: str, scope_key: str) -> None:
        scheme, params = parse_challenge(challenge)
        creds = None
        if self.settings.username is not None:
            creds = aiohttp.BasicAuth(self.settings.username, self.settings.password or "")
        if scheme == "basic" and creds is not None:
            self._basic = creds
            return
        realm = params.pop("realm", "")
        if scheme != "bearer" or not realm:
            raise UpstreamAnswer(self.name, 401)
        try:
            async with asyncio.timeout(self.first_byte_timeout):
                token, lifetime = await request_token(self.client.session, realm, params, creds)
        except TokenRefused as e:
            raise UpstreamAnswer(self.name, e.status or 401) from None
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise UpstreamFailure(self.name, "token_" + type(e).__name__) from e
        self._tokens[scope_key] = (token, time.monotonic() + max((lifetime or 60) - 10, 5))


class UpstreamGroup:
    def __init__(self, name: str, settings: UpstreamGroupSettings, client: HttpClient,
                 via: str) -> None:
        self.name = name
        self.settings = settings
        self.upstreams = [Upstream(u, settings, client, via) for u in settings.upstreams]
        weighted = [u for u in self.upstreams if not u.settings.backup
                    for _ in range(u.settings.weight)]
        self._rotation = itertools.cycle(range(len(weighted))) if weighted else None
        self._weighted = weighted
        self.listeners: list[MirrorListener] = []

    @property
    def max_attempts(self) -> int:
        return self.settings.max_attempts or 2 * len(self.upstreams) + 1

    def candidates(self) -> list[Upstream]:
        """Healthy primaries (rotated by weight), healthy backups, then the rest as a last try."""
        now = time.monotonic()
        order: list[Upstream] = []
        if self._rotation is not None:
            start = next(self._rotation)
            for i in range(len(self._weighted)):
                u = self._weighted[(start + i) % len(self._weighted)]
                if u not in order and u.health.is_up(now):
                    order.append(u)
        order += [u for u in self.upstreams if u.settings.backup and u.health.is_up(now)]
        order += [u for u in self.upstreams if u not in order]
        return order

    def failed(self, upstream: Upstream, reason: str) -> None:
        now = time.monotonic()
        h = upstream.health
        window = upstream.settings.fail_timeout
        h.failures = [t for t in h.failures if now - t < window] + [now]
        if len(h.failures) >= upstream.settings.max_fails and h.is_up(now):
            h.down_until = now + window
            log.warning("upstream %s down for %.0fs: %s", upstream.name, window, reason)
            self._emit(UpstreamHealthChanged(upstream.name, False))

    def succeeded(self, upstream: Upstream) -> None:
        h = upstream.health
        if h.failures or not h.is_up(time.monotonic()):
            h.failures.clear()
            h.down_until = 0.0
            self._emit(UpstreamHealthChanged(upstream.name, True))

    def _emit(self, event: MirrorEvent) -> None:
        for listener in self.listeners:
            listener(event)

    def _record(self, upstream: str, result: UpstreamResult, seconds: float) -> None:
        self._emit(UpstreamRequested(upstream, result, seconds))

    async def attempt(self, call: Callable[[Upstream], Awaitable[T]]) -> T:
        """Run `call` against upstreams in order until one answers; fail over on failures."""
        reasons: list[str] = []
        candidates = self.candidates()
        for i in range(self.max_attempts):
            upstream = candidates[i % len(candidates)]
            started = time.monotonic()
            try:
                result = await call(upstream)
            except UpstreamFailure as e:
                outcome: UpstreamResult = "timeout" if "Timeout" in e.reason else "error"
                self._record(upstream.name, outcome, time.monotonic() - started)
                reasons.append(f"{e.upstream}: {e.reason}")
                self.failed(upstream, e.reason)
                self._emit(FailedOver(self.name))
                continue
            except UpstreamAnswer as e:
                answered: UpstreamResult = "not_found" if e.status == 404 else "error"
                self._record(upstream.name, answered, time.monotonic() - started)
                self.succeeded(upstream)
                raise
            self._record(upstream.name, "ok", time.monotonic() - started)
            self.succeeded(upstream)
            return result
        raise NoUpstreamAvailable(self.name, reasons)

    async def check_health(self) -> None:
        """One active health round: GET /v2/ on each upstream (401 counts as alive)."""
        for u in self.upstreams:
            try:
                response = await u.request("GET", "/v2/", {}, "")
                response.release()
            except UpstreamAnswer:
                self.succeeded(u)
            except UpstreamFailure as e:
                self.failed(u, e.reason)
            else:
                self.succeeded(u)

    async def health_loop(self) -> None:
        interval = self.settings.health_check_interval
        while interval > 0:
            await asyncio.sleep(interval)
            await self.check_health()
