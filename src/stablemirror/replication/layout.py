"""An OCI image layout directory as either end of a copy (skopeo's `oci:DIR[:TAG]`).

Blobs are `blobs/<alg>/<hex>`, written to a temporary file in that directory and renamed
once their digest is checked; tags are `org.opencontainers.image.ref.name` annotations of
`index.json`, replaced atomically (write, fsync, rename)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from stablemirror.client.registry import FetchedManifest
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import BlobUnknown, DigestInvalid
from stablemirror.replication.endpoint import (
    BlobOutcome,
    BlobReader,
    Progress,
    TransferSettings,
)

REF_NAME = "org.opencontainers.image.ref.name"
PIECE = 1 << 20


def _read_at(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as f:  # this thread's own fd, opened and closed here
        f.seek(start)
        return f.read(end - start)


class LayoutBlobReader:
    def __init__(self, path: Path, digest: Digest, size: int) -> None:
        self.path = path
        self.digest = digest
        self.size = size

    async def read_range(self, start: int, end: int) -> bytes | None:
        try:
            data = await asyncio.to_thread(_read_at, self.path, start, end)
        except FileNotFoundError:
            raise BlobUnknown(digest=str(self.digest)) from None
        if len(data) != end - start:
            raise BlobUnknown(digest=str(self.digest), reason="shorter than its descriptor")
        return data

    async def stream(self) -> AsyncIterator[bytes]:
        for start in range(0, self.size, PIECE):
            data = await self.read_range(start, min(self.size, start + PIECE))
            assert data is not None
            yield data


class LayoutEndpoint:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"oci:{root}"

    # -- files ---------------------------------------------------------------------------------
    def _blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def _index(self) -> dict[str, Any]:
        try:
            doc = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}
        return doc if isinstance(doc, dict) else {"manifests": []}

    def _write_index(self, doc: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            layout.write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        tmp = self.root / f".index.json.{secrets.token_hex(6)}"
        with tmp.open("w") as f:
            json.dump(doc, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.root / "index.json")

    def _write_blob(self, data: bytes, digest: Digest) -> None:
        path = self._blob_path(digest)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        tmp.write_bytes(data)
        tmp.replace(path)

    def tags(self) -> list[str]:
        return [str(m["annotations"][REF_NAME]) for m in self._index().get("manifests", [])
                if isinstance(m, dict) and REF_NAME in (m.get("annotations") or {})]

    # -- the endpoint --------------------------------------------------------------------------
    async def head_manifest(self, repository: str, reference: str) -> Digest | None:
        if ":" in reference:
            d = Digest.parse(reference)
            return d if self._blob_path(d).exists() else None
        for m in self._index().get("manifests", []):
            if (m.get("annotations") or {}).get(REF_NAME) == reference:
                return Digest.parse(m["digest"])
        return None

    async def get_manifest(self, repository: str, reference: str) -> FetchedManifest | None:
        digest = await self.head_manifest(repository, reference)
        if digest is None:
            return None
        content = await asyncio.to_thread(self._blob_path(digest).read_bytes)
        if Digest.of(content, digest.algorithm) != digest:
            raise DigestInvalid(digest=str(digest), reason="layout blob")
        media_type = str(json.loads(content).get("mediaType") or mt.OCI_MANIFEST)
        return FetchedManifest(content, media_type, digest)

    async def put_manifest(self, repository: str, reference: str, body: bytes,
                           media_type: str) -> bool:
        digest = Digest.of(body)
        await asyncio.to_thread(self._write_blob, body, digest)
        if ":" not in reference:
            doc = self._index()
            kept = [m for m in doc.get("manifests", [])
                    if (m.get("annotations") or {}).get(REF_NAME) != reference]
            kept.append({"mediaType": media_type, "digest": str(digest), "size": len(body),
                         "annotations": {REF_NAME: reference}})
            doc["manifests"] = kept
            await asyncio.to_thread(self._write_index, doc)
        return False

    async def delete_manifest(self, repository: str, digest: Digest) -> bool:
        doc = self._index()
        kept = [m for m in doc.get("manifests", []) if m.get("digest") != str(digest)]
        if len(kept) == len(doc.get("manifests", [])):
            return False
        doc["manifests"] = kept
        await asyncio.to_thread(self._write_index, doc)
        return True

    async def has_blob(self, repository: str, digest: Digest) -> bool:
        return self._blob_path(digest).exists()

    async def referrers(self, repository: str, digest: Digest
                        ) -> list[dict[str, object]] | None:
        return None  # a layout keeps referrers under the `sha256-<hex>` tag fallback

    async def tag_pages(self, repository: str) -> AsyncIterator[list[str]]:
        yield self.tags()

    def reader(self, repository: str, digest: Digest, size: int) -> BlobReader:
        return LayoutBlobReader(self._blob_path(digest), digest, size)

    async def receive_blob(self, repository: str, reader: BlobReader,
                           settings: TransferSettings, progress: Progress | None,
                           mount_from: list[str]) -> BlobOutcome:
        path = self._blob_path(reader.digest)
        if path.exists():
            return "present"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        hasher = hashlib.new(reader.digest.algorithm)
        done = 0
        try:
            with tmp.open("wb") as f:
                for start in range(0, reader.size, settings.chunk_size):
                    data = await reader.read_range(start, min(reader.size,
                                                              start + settings.chunk_size))
                    if data is None:
                        raise BlobUnknown(digest=str(reader.digest), reason="no ranges")
                    hasher.update(data)
                    await asyncio.to_thread(f.write, data)
                    done += len(data)
                    if progress is not None:
                        progress(reader.digest, done, reader.size)
            if hasher.hexdigest() != reader.digest.hex:
                raise DigestInvalid(digest=str(reader.digest), reason="bytes received")
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return "uploaded"

    async def close(self) -> None:
        return None
