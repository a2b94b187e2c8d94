"""A small OCI distribution client: manifests and blobs, verified by digest.

Errors come back as the oci/errors.py class named by the registry's error code (a `Denied`
stays a `Denied`, with the registry's message in its detail); 404s without a body become
`ManifestUnknown` / `BlobUnknown`; transport failures become `Unavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urljoin

import aiohttp

from stablemirror.client.auth import Authenticator
from stablemirror.client.reference import base_url
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import (
    ALL_ERRORS,
    BlobUnknown,
    DigestInvalid,
    ManifestTooLarge,
    ManifestUnknown,
    OCIError,
    Unavailable,
)
from stablemirror.oci.manifest import MAX_MANIFEST_BYTES

ACCEPT_MANIFESTS = ", ".join(sorted(mt.MANIFESTS))
_BY_CODE = {cls.code: cls for cls in reversed(ALL_ERRORS)}  # base class wins over subclass


class BlobSink(Protocol):
    """Where a downloaded blob goes: a binary file, or anything that takes its bytes."""

    def write(self, data: bytes, /) -> int: ...


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    content: bytes
    media_type: str
    digest: Digest


async def read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refused above `limit` bytes (`content.read(n)` alone returns only
    what has arrived so far: a body in two TCP segments would come back cut)."""
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise ManifestTooLarge(url=str(resp.url), limit=limit)
    return bytes(buf)


async def _error(resp: aiohttp.ClientResponse, default: type[OCIError]) -> OCIError:
    detail: dict[str, Any] = {"status": resp.status, "url": str(resp.url)}
    cls: type[OCIError] = default if resp.status == 404 else OCIError
    try:
        doc = json.loads(await read_limited(resp, 64 * 1024))
        first = doc["errors"][0]
        cls = _BY_CODE.get(str(first.get("code")), cls)
        detail["message"] = first.get("message")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OCIError):
        pass
    return cls(**detail)


class RegistryClient:
    """One registry; use as `async with RegistryClient(registry) as client:`."""

    def __init__(self, registry: str, *, insecure: bool = False,
                 credentials: tuple[str, str] | None = None,
                 session: aiohttp.ClientSession | None = None,
                 timeout: float = 300.0) -> None:
        self.registry = registry
        self.base = base_url(registry, insecure)
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout))
        self.auth = Authenticator(self.session, credentials)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session:
            await self.session.close()

    # -- plumbing ----------------------------------------------------------------------------
    async def _send(self, method: str, url: str, scope: str, *,
                    headers: dict[str, str] | None = None,
                    data: bytes | AsyncIterator[bytes] | None = None,
                    ) -> aiohttp.ClientResponse:
        """One request; answers one 401 challenge and retries. Caller releases the response."""
        for attempt in range(2):
            h = dict(headers or {})
            token = self.auth.header(scope)
            if token is not None:
                h["Authorization"] = token
            try:
                resp = await self.session.request(method, url, headers=h, data=data,
                                                  allow_redirects=True)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise Unavailable(url=url, reason=f"{type(e).__name__}: {e}") from e
            challenge = resp.headers.get("WWW-Authenticate")
            if resp.status != 401 or attempt == 1 or not challenge:
                return resp
            resp.release()
            await self.auth.answer(challenge, scope)
        raise AssertionError("unreachable")

    async def send(self, method: str, url: str, scope: str, *,
                   headers: dict[str, str] | None = None,
                   data: bytes | AsyncIterator[bytes] | None = None,
                   ) -> aiohttp.ClientResponse:
        """A request for the other client modules (uploads, listings); caller releases it."""
        return await self._send(method, url, scope, headers=headers, data=data)

    def url(self, repository: str, tail: str) -> str:
        return self._url(repository, tail)

    def _url(self, repository: str, tail: str) -> str:
        return f"{self.base}/v2/{repository}/{tail}"

    @staticmethod
    def _scope(repository: str, push: bool = False) -> str:
        return f"repository:{repository}:{'pull,push' if push else 'pull'}"

    # -- manifests -------------------------------------------------------------------------------
    async def find_manifest(self, repository: str, reference: str,
                            accept: str = ACCEPT_MANIFESTS) -> FetchedManifest | None:
        """The manifest at a tag or digest, verified against its digest; None if absent."""
        url = self._url(repository, f"manifests/{reference}")
        resp = await self._send("GET", url, self._scope(repository), headers={"Accept": accept})
        async with resp:
            if resp.status == 404:
                err = await _error(resp, ManifestUnknown)
                if isinstance(err, ManifestUnknown):
                    return None
                raise err
            if resp.status != 200:
                raise await _error(resp, ManifestUnknown)
            content = await read_limited(resp, MAX_MANIFEST_BYTES)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
            header = resp.headers.get("Docker-Content-Digest")
        algorithm = "sha256"
        if ":" in reference:
            algorithm = Digest.parse(reference).algorithm
        elif header:
            algorithm = Digest.parse(header).algorithm
        actual = Digest.of(content, algorithm)
        if ":" in reference and str(actual) != reference:
            raise DigestInvalid(url=url, digest=reference, actual=str(actual))
        if not media_type or media_type in mt.GENERIC_CONTENT_TYPES:
            try:
                media_type = str(json.loads(content).get("mediaType") or "")
            except (ValueError, AttributeError):
                media_type = ""
        return FetchedManifest(content, media_type, actual)

    async def get_manifest(self, repository: str, reference: str,
                           accept: str = ACCEPT_MANIFESTS) -> FetchedManifest:
        found = await self.find_manifest(repository, reference, accept)
        if found is None:
            raise ManifestUnknown(repository=repository, reference=reference,
                                  registry=self.registry)
        return found

    async def resolve(self, repository: str, reference: str) -> Digest:
        """The digest a tag points at (HEAD, falling back to GET); a digest is returned as is."""
        if ":" in reference:
            return Digest.parse(reference)
        url = self._url(repository, f"manifests/{reference}")
        resp = await self._send("HEAD", url, self._scope(repository),
                                headers={"Accept": ACCEPT_MANIFESTS})
        async with resp:
            header = resp.headers.get("Docker-Content-Digest")
            if resp.status == 200 and header:
                return Digest.parse(header)
            if resp.status == 404:
                raise ManifestUnknown(repository=repository, reference=reference,
                                      registry=self.registry)
        return (await self.get_manifest(repository, reference)).digest

    async def head_manifest(self, repository: str, reference: str) -> Digest | None:
        """The digest at a tag or digest by HEAD alone (a GET only when the registry leaves
        the digest header out); None if absent."""
        if ":" in reference:
            return Digest.parse(reference) if await self._head_ok(repository, reference) \
                else None
        try:
            return await self.resolve(repository, reference)
        except ManifestUnknown:
            return None

    async def _head_ok(self, repository: str, reference: str) -> bool:
        url = self._url(repository, f"manifests/{reference}")
        async with await self._send("HEAD", url, self._scope(repository),
                                    headers={"Accept": ACCEPT_MANIFESTS}) as resp:
            if resp.status in (200, 404):
                return resp.status == 200
            raise await _error(resp, ManifestUnknown)

    async def put_manifest(self, repository: str, reference: str, body: bytes,
                           media_type: str) -> Digest:
        await self.put_manifest_answer(repository, reference, body, media_type)
        return Digest.of(body)

    async def put_manifest_answer(self, repository: str, reference: str, body: bytes,
                                  media_type: str) -> dict[str, str]:
        """PUT the exact bytes; the answer's headers (`OCI-Subject` says the registry
        indexed the manifest's subject for the referrers API)."""
        url = self._url(repository, f"manifests/{reference}")
        resp = await self._send("PUT", url, self._scope(repository, push=True),
                                headers={"Content-Type": media_type}, data=body)
        async with resp:
            if resp.status not in (200, 201):
                raise await _error(resp, ManifestUnknown)
            return dict(resp.headers)

    async def delete_manifest(self, repository: str, reference: Digest | str) -> bool:
        """DELETE by digest (or by tag, where the registry supports it); False if it was
        not there."""
        url = self._url(repository, f"manifests/{reference}")
        async with await self._send("DELETE", url,
                                    f"repository:{repository}:delete,pull,push") as resp:
            if resp.status in (200, 202):
                return True
            if resp.status == 404:
                return False
            raise await _error(resp, ManifestUnknown)

    # -- blobs -----------------------------------------------------------------------------------
    async def blob_exists(self, repository: str, digest: Digest) -> bool:
        url = self._url(repository, f"blobs/{digest}")
        async with await self._send("HEAD", url, self._scope(repository)) as resp:
            return resp.status == 200

    async def get_blob(self, repository: str, digest: Digest, max_size: int) -> bytes:
        """A whole (small) blob, verified against its digest."""
        url = self._url(repository, f"blobs/{digest}")
        async with await self._send("GET", url, self._scope(repository)) as resp:
            if resp.status != 200:
                raise await _error(resp, BlobUnknown)
            data = await read_limited(resp, max_size)
        actual = Digest.of(data, digest.algorithm)
        if actual != digest:
            raise DigestInvalid(url=url, digest=str(digest), actual=str(actual))
        return data

    async def download_blob(self, repository: str, digest: Digest, out: BlobSink,
                            on_chunk: Callable[[int], None] | None = None) -> int:
        """Stream a blob of any size into `out`, verified against its digest; `on_chunk`
        hears the size of each piece written (progress)."""
        url = self._url(repository, f"blobs/{digest}")
        hasher = hashlib.new(digest.algorithm)
        size = 0
        async with await self._send("GET", url, self._scope(repository)) as resp:
            if resp.status != 200:
                raise await _error(resp, BlobUnknown)
            async for chunk in resp.content.iter_chunked(1 << 20):
                hasher.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if on_chunk is not None:
                    on_chunk(len(chunk))
        if hasher.hexdigest() != digest.hex:
            raise DigestInvalid(url=url, digest=str(digest))
        return size

    async def get_range(self, repository: str, digest: Digest, start: int, end: int
                        ) -> bytes | None:
        """Bytes [start, end) of a blob; None when the registry answers without Range
        support (a 200), so the caller can fall back to the whole blob."""
        url = self._url(repository, f"blobs/{digest}")
        async with await self._send("GET", url, self._scope(repository),
                                    headers={"Range": f"bytes={start}-{end - 1}"}) as resp:
            if resp.status == 200:
                return None
            if resp.status != 206:
                raise await _error(resp, BlobUnknown)
            if resp.headers.get("Content-Range", "").split("/")[0] != \
                    f"bytes {start}-{end - 1}":
                return None
            try:
                return await resp.content.readexactly(end - start)
            except (aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError) as e:
                raise Unavailable(url=url, reason=f"{type(e).__name__}: {e}") from e

    async def referrers(self, repository: str, digest: str, artifact_type: str = "") -> bytes:
        """The referrers-API answer (an OCI index) for `digest`, filtered by artifact type
        when one is given; an empty index where the registry has no referrers API (404)."""
        query = f"?artifactType={artifact_type}" if artifact_type else ""
        url = self._url(repository, f"referrers/{digest}{query}")
        async with await self._send("GET", url, self._scope(repository)) as resp:
            if resp.status == 404:
                return b'{"manifests": []}'
            if resp.status != 200:
                raise await _error(resp, ManifestUnknown)
            return await read_limited(resp, MAX_MANIFEST_BYTES)

    async def push_blob(self, repository: str, data: bytes) -> Digest:
        """Upload `data` (POST a session, PUT it whole) unless the registry has it."""
        digest = Digest.of(data)
        if await self.blob_exists(repository, digest):
            return digest
        await self._upload(repository, digest, data, len(data))
        return digest

    async def push_blob_file(self, repository: str, path: Path, digest: Digest, size: int,
                             on_chunk: Callable[[int], None] | None = None) -> None:
        """Upload a file already hashed as `digest` (one POST, one streamed PUT), read in
        1 MiB pieces by a worker thread; the registry checks the digest. Existence is the
        caller's question (`blob_exists`), asked before it hashes or after."""

        async def pieces() -> AsyncIterator[bytes]:
            # Buffered on purpose: if the upload is cancelled mid-read, close() waits for the
            # buffer lock the reading thread holds (docs/architecture.md, threads and fds).
            with path.open("rb") as f:
                while piece := await asyncio.to_thread(f.read, 1 << 20):
                    if on_chunk is not None:
                        on_chunk(len(piece))
                    yield piece

        await self._upload(repository, digest, pieces(), size)

    async def _upload(self, repository: str, digest: Digest,
                      body: bytes | AsyncIterator[bytes], size: int) -> None:
        # The POST answers any challenge for the push scope, so the PUT (whose streamed
        # body could not be sent twice) goes out with the token already cached.
        scope = self._scope(repository, push=True)
        async with await self._send("POST", self._url(repository, "blobs/uploads/"),
                                    scope) as resp:
            if resp.status != 202 or "Location" not in resp.headers:
                raise await _error(resp, BlobUnknown)
            location = urljoin(str(resp.url), resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        async with await self._send(
            "PUT", f"{location}{sep}digest={digest}", scope,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(size)}, data=body,
        ) as resp:
            if resp.status != 201:
                raise await _error(resp, BlobUnknown)
