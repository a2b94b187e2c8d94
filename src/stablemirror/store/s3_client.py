"""The S3 connection of the S3 blob store: one aiobotocore client per process, every call
counted (stablemirror_s3_requests_total) and every failure turned into one of two things:
`S3Missing` (the object, upload or bucket is not there) or `StorageUnavailable` (503: S3
did not answer, or answered with an error; retrying once it is back works).

The client is made on first use, in the running event loop: `serve` builds its app in each
forked worker, and a client must never cross a fork or a loop. Credentials are never logged
(they live in SecretStr settings and in botocore's signer only). docs/storage.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiobotocore.session import get_session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from stablemirror.metrics import Metrics, S3Operation
from stablemirror.oci.errors import StorageUnavailable
from stablemirror.store.config import S3Settings

log = logging.getLogger("stablemirror.store.s3")
COPY_LIMIT = 5 << 30  # CopyObject's maximum; larger objects are copied part by part
COPY_PART = 1 << 30
_MISSING_CODES = {"404", "NoSuchKey", "NoSuchUpload", "NoSuchBucket", "NotFound"}
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


class S3Missing(Exception):
    """The key, multipart upload or bucket does not exist (S3 said 404)."""


class S3Conflict(Exception):
    """A conditional write lost (S3 said 412): the object changed since it was read."""


def _status(e: ClientError) -> int | None:
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def _is_missing(e: ClientError) -> bool:
    code = str(e.response.get("Error", {}).get("Code", ""))
    return code in _MISSING_CODES or _status(e) == 404


class S3Connection:
    def __init__(self, settings: S3Settings, metrics: Metrics | None = None,
                 log_failures: bool = True) -> None:
        """`log_failures`: a warning per failed call (off for the start-up probe, whose
        failure is the one line the user sees)."""
        self.settings = settings
        self.log_failures = log_failures
        self.bucket = settings.bucket
        self.metrics = metrics
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock: asyncio.Lock | None = None

    def _config(self) -> Config:
        anonymous = self.settings.access_key is None
        return Config(
            signature_version=UNSIGNED if anonymous else "s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5, read_timeout=60, max_pool_connections=64,
            # Whole-body CRC32s computed in Python cost more CPU than the transfer; the
            # digest check of every blob is what vouches for the bytes.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )

    async def client(self) -> Any:
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                s = self.settings
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(get_session().create_client(
                    "s3", endpoint_url=s.endpoint, region_name=s.region, config=self._config(),
                    aws_access_key_id=s.access_key.get_secret_value() if s.access_key else None,
                    aws_secret_access_key=(s.secret_key.get_secret_value()
                                           if s.secret_key else None)))
                self._stack = stack
        return self._client

    async def aclose(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()

    def _unavailable(self, op: str, e: BaseException) -> StorageUnavailable:
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            reason = f"{err.get('Code', 'error')}: {err.get('Message', '')}".strip(": ")
        else:
            reason = type(e).__name__ + (f": {e}" if str(e) else "")
        if self.log_failures:
            log.warning("S3 %s failed: %s", op, reason)
        return StorageUnavailable(operation=op, reason=reason[:200])

    def _count(self, op: S3Operation, failed: bool = False) -> None:
        if self.metrics is not None:
            self.metrics.s3_request(op, failed)

    def _transferred(self, direction: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.s3_transferred("sent" if direction == "sent" else "received", n)

    async def call(self, op: S3Operation, method: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 API call (botocore retries transient failures itself)."""
        client = await self.client()
        kwargs.setdefault("Bucket", self.bucket)
        try:
            result: dict[str, Any] = await getattr(client, method)(**kwargs)
        except ClientError as e:
            lost = _status(e) == 412
            self._count(op, failed=not (_is_missing(e) or lost))
            if _is_missing(e):
                raise S3Missing(kwargs.get("Key", self.bucket)) from e
            if lost:
                raise S3Conflict(kwargs.get("Key", self.bucket)) from e
            raise self._unavailable(op, e) from e
        except _TRANSPORT_ERRORS as e:
            self._count(op, failed=True)
            raise self._unavailable(op, e) from e
        self._count(op)
        body = kwargs.get("Body")
        if isinstance(body, bytes | bytearray | memoryview):
            self._transferred("sent", len(body))
        return result

    async def head(self, key: str) -> dict[str, Any] | None:
        try:
            return await self.call("head", "head_object", Key=key)
        except S3Missing:
            return None

    async def stream(self, key: str, offset: int = 0, length: int | None = None,
                     if_match: str | None = None, piece: int = 1 << 20
                     ) -> AsyncIterator[bytes]:
        """GET `key` (a byte range of it), in pieces of up to `piece` bytes. S3Missing if
        it is not there; StorageUnavailable if S3 fails before or during the body."""
        extra: dict[str, Any] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            extra["Range"] = f"bytes={offset}-{end}"
        if if_match is not None:
            extra["IfMatch"] = if_match
        r = await self.call("get", "get_object", Key=key, **extra)
        body = r["Body"]
        try:
            while True:
                try:
                    data = await body.read(piece)
                except _TRANSPORT_ERRORS as e:
                    self._count("get", failed=True)
                    raise self._unavailable("get", e) from e
                if not data:
                    return
                self._transferred("received", len(data))
                yield data
        finally:
            body.close()

    async def read_all(self, key: str) -> bytes:
        out = bytearray()
        async for data in self.stream(key):
            out += data
        return bytes(out)

    async def put(self, key: str, data: bytes, **extra: Any) -> str:
        r = await self.call("put", "put_object", Key=key, Body=data, **extra)
        return str(r.get("ETag", ""))

    async def delete(self, key: str) -> None:
        with contextlib.suppress(S3Missing):
            await self.call("delete", "delete_object", Key=key)

    async def list(self, prefix: str) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            r = await self.call("list", "list_objects_v2", Prefix=prefix, **extra)
            for item in r.get("Contents", []):
                yield item
            if not r.get("IsTruncated"):
                return
            token = r.get("NextContinuationToken")

    async def copy(self, source: str, dest: str, size: int, if_match: str | None = None
                   ) -> None:
        """Server-side copy (no bytes through us); part by part above 5 GiB."""
        src: dict[str, Any] = {"Bucket": self.bucket, "Key": source}
        if size <= COPY_LIMIT:
            extra = {"CopySourceIfMatch": if_match} if if_match else {}
            await self.call("copy", "copy_object", Key=dest, CopySource=src, **extra)
            return
        up = await self.call("create_multipart", "create_multipart_upload", Key=dest)
        upload_id = up["UploadId"]
        parts = []
        try:
            for n, start in enumerate(range(0, size, COPY_PART), start=1):
                end = min(size, start + COPY_PART) - 1
                extra = {"CopySourceIfMatch": if_match} if if_match else {}
                r = await self.call("upload_part_copy", "upload_part_copy", Key=dest,
                                    UploadId=upload_id, PartNumber=n, CopySource=src,
                                    CopySourceRange=f"bytes={start}-{end}", **extra)
                parts.append({"PartNumber": n, "ETag": r["CopyPartResult"]["ETag"]})
            await self.call("complete_multipart", "complete_multipart_upload", Key=dest,
                            UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                await self.call("abort_multipart", "abort_multipart_upload", Key=dest,
                                UploadId=upload_id)
            raise

    async def presign_get(self, key: str, expires: int) -> str:
        client = await self.client()
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires)
        return url

    async def ensure_bucket(self, create: bool) -> None:
        """The bucket answers (created first with `create`); StorageUnavailable or S3Missing."""
        try:
            await self.call("head_bucket", "head_bucket")
        except S3Missing:
            if not create:
                raise
            await self.call("create_bucket", "create_bucket")


