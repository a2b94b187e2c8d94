"""Blob upload sessions, one request each: start (or mount), status, PATCH a chunk in order,
finish with the digest, cancel. The transfer engine (replication/blobs.py) strings them
together; a session's URL changes with every answer (`Location`), so each call returns it."""

from __future__ import annotations

from urllib.parse import urljoin

from stablemirror.client.registry import RegistryClient, _error
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, BlobUploadUnknown


def _push_scope(repository: str) -> str:
    # A mount's source repository is not added to the scope: a registry that does not let
    # this token read it simply opens a session (202) and the blob is uploaded.
    return f"repository:{repository}:pull,push"


async def start_upload(client: RegistryClient, repository: str, *,
                       mount: Digest | None = None, mount_from: str | None = None
                       ) -> str | None:
    """A new session's URL; None when `mount` was mounted from `mount_from` (201)."""
    query = f"?mount={mount}&from={mount_from}" if mount and mount_from else ""
    url = client.url(repository, f"blobs/uploads/{query}")
    async with await client.send("POST", url, _push_scope(repository)) as resp:
        if resp.status == 201 and mount is not None:
            return None
        if resp.status != 202 or "Location" not in resp.headers:
            raise await _error(resp, BlobUnknown)
        return urljoin(str(resp.url), resp.headers["Location"])


def _offset(range_header: str | None) -> int:
    """`Range: 0-<last>` -> bytes held. `0-0` is read as none: registries send it for an
    empty session, and re-sending one byte costs nothing (a 416 tells the truth)."""
    if not range_header:
        return 0
    last = range_header.removeprefix("bytes=").partition("-")[2]
    return int(last) + 1 if last.isdigit() and int(last) > 0 else 0


async def upload_offset(client: RegistryClient, repository: str, location: str
                        ) -> tuple[int, str]:
    """(bytes the session holds, its URL); BlobUploadUnknown if the session is gone."""
    async with await client.send("GET", location, _push_scope(repository)) as resp:
        if resp.status == 404:
            raise BlobUploadUnknown(url=location)
        if resp.status not in (200, 204):
            raise await _error(resp, BlobUploadUnknown)
        return _offset(resp.headers.get("Range")), urljoin(
            str(resp.url), resp.headers.get("Location", location))


async def patch_chunk(client: RegistryClient, repository: str, location: str, start: int,
                      data: bytes) -> tuple[int, str]:
    """PATCH bytes [start, start+len) of the blob; (new offset, next URL). A 416 becomes
    UploadRangeInvalid (the caller asks the status and resumes from there)."""
    headers = {"Content-Type": "application/octet-stream",
               "Content-Range": f"{start}-{start + len(data) - 1}",
               "Content-Length": str(len(data))}
    async with await client.send("PATCH", location, _push_scope(repository),
                                 headers=headers, data=data) as resp:
        if resp.status != 202:
            raise await _error(resp, BlobUploadUnknown)
        end = _offset(resp.headers.get("Range")) or start + len(data)
        return end, urljoin(str(resp.url), resp.headers.get("Location", location))


async def finish_upload(client: RegistryClient, repository: str, location: str,
                        digest: Digest, data: bytes = b"") -> None:
    sep = "&" if "?" in location else "?"
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    async with await client.send("PUT", f"{location}{sep}digest={digest}",
                                 _push_scope(repository), headers=headers, data=data) as resp:
        if resp.status != 201:
            raise await _error(resp, BlobUnknown)


async def cancel_upload(client: RegistryClient, repository: str, location: str) -> None:
    async with await client.send("DELETE", location, _push_scope(repository)):
        pass
