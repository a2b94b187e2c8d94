"""Blob upload sessions: POST (session, monolithic or mount), PATCH, PUT, GET, DELETE."""

from __future__ import annotations

import re

from aiohttp import web

from stablemirror.api.auth import mount_allowed
from stablemirror.api.body import has_body, stream_body
from stablemirror.api.context import context
from stablemirror.api.keys import REGISTRY
from stablemirror.oci.errors import BlobUploadInvalid, BlobUploadUnknown, DigestInvalid

_CONTENT_RANGE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)(?:/\d+|/\*)?$")
_UPLOAD_ID = re.compile(r"^[a-f0-9]{32}$")
MIN_CHUNK = 1 << 20  # advertised OCI-Chunk-Min-Length; smaller chunks are still accepted


def _check_id(upload: str) -> str:
    if not _UPLOAD_ID.match(upload):
        raise BlobUploadUnknown(upload=upload)
    return upload


def _session_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _blob_created(name: str, digest: str) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        },
    )


async def start(request: web.Request, name: str) -> web.StreamResponse:
    registry = request.app[REGISTRY]
    mount = request.query.get("mount")
    if mount and mount_allowed(request) and await registry.mount_blob(
        context(request), name, mount, request.query.get("from")
    ):
        return _blob_created(name, mount)
    digest = request.query.get("digest")
    if digest is not None:
        stored = await registry.upload_monolithic(
            context(request), name, digest, stream_body(request)
        )
        return _blob_created(name, str(stored))
    upload_id = await registry.start_upload(context(request), name)
    headers = _session_headers(name, upload_id, 0)
    headers["OCI-Chunk-Min-Length"] = str(MIN_CHUNK)
    return web.Response(status=202, headers=headers)


async def status(request: web.Request, name: str, upload: str) -> web.StreamResponse:
    size = await request.app[REGISTRY].upload_status(context(request), name, _check_id(upload))
    return web.Response(status=204, headers=_session_headers(name, upload, size))


async def patch(request: web.Request, name: str, upload: str) -> web.StreamResponse:
    start_at: int | None = None
    header = request.headers.get("Content-Range")
    if header:
        m = _CONTENT_RANGE.match(header.strip())
        if m is None:
            raise BlobUploadInvalid(content_range=header, reason="malformed Content-Range")
        start_at, end = int(m.group(1)), int(m.group(2))
        length = request.content_length
        if end < start_at or (length is not None and length != end - start_at + 1):
            raise BlobUploadInvalid(
                content_range=header,
                content_length=length,
                reason="Content-Range does not match Content-Length",
            )
    size = await request.app[REGISTRY].upload_chunk(
        context(request), name, _check_id(upload), start_at, stream_body(request)
    )
    return web.Response(status=202, headers=_session_headers(name, upload, size))


async def finish(request: web.Request, name: str, upload: str) -> web.StreamResponse:
    digest = request.query.get("digest")
    if not digest:
        raise DigestInvalid(reason="digest query parameter is required")
    body = stream_body(request) if has_body(request) else None
    stored = await request.app[REGISTRY].finish_upload(
        context(request), name, _check_id(upload), digest, body
    )
    return _blob_created(name, str(stored))


async def cancel(request: web.Request, name: str, upload: str) -> web.StreamResponse:
    await request.app[REGISTRY].cancel_upload(context(request), name, _check_id(upload))
    return web.Response(status=204)
