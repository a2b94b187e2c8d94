"""One exception class per OCI distribution error code.

Every error a client can see is one of these. Each carries structured fields
(`detail`) instead of preformatted text; the HTTP layer renders them into the
spec's `{"errors": [{"code", "message", "detail"}]}` body in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OCIError(Exception):
    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    message: ClassVar[str] = "unknown error"

    def __init__(self, **detail: Any) -> None:
        super().__init__(self.code, detail)
        self.detail: dict[str, Any] = detail
        self.headers: dict[str, str] = {}

    def describe(self) -> str:
        """A human message: the code's message plus the structured detail."""
        if not self.detail:
            return self.message
        parts = ", ".join(f"{k}={v}" for k, v in self.detail.items())
        return f"{self.message} ({parts})"


class BlobUnknown(OCIError):
    code, status, message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(OCIError):
    code, status, message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class UploadRangeInvalid(BlobUploadInvalid):
    """A chunk that does not start where the upload currently ends (spec: 416)."""

    status = 416
    message = "chunk out of order: Content-Range does not continue the upload"


class BlobUploadUnknown(OCIError):
    code, status, message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(OCIError):
    code, status, message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestBlobUnknown(OCIError):
    code, status = "MANIFEST_BLOB_UNKNOWN", 400
    message = "manifest references a blob unknown to registry"


class ManifestInvalid(OCIError):
    code, status, message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestTooLarge(ManifestInvalid):
    status = 413
    message = "manifest exceeds the size limit"


class ManifestUnknown(OCIError):
    code, status, message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class TagInvalid(OCIError):
    """A tag push refused by a tag rule (an immutable version, a release channel)."""

    code, status, message = "TAG_INVALID", 400, "manifest tag did not match URI"


class ReleaseInvalid(OCIError):
    """A release request (promote, split, rollback) that names something wrong; the detail
    says which field and why. Nothing changed."""

    code, status, message = "RELEASE_INVALID", 400, "invalid release request"


class NameInvalid(OCIError):
    code, status, message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(OCIError):
    code, status, message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(OCIError):
    code, status, message = "SIZE_INVALID", 400, "provided length did not match content length"


class Unauthorized(OCIError):
    code, status, message = "UNAUTHORIZED", 401, "authentication required"


class Denied(OCIError):
    code, status, message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(OCIError):
    code, status, message = "UNSUPPORTED", 405, "the operation is unsupported"


class TooManyRequests(OCIError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many requests"


class RangeInvalid(OCIError):
    code, status, message = "RANGE_INVALID", 416, "requested range not satisfiable"


class PaginationNumberInvalid(OCIError):
    """`n` that is not a count. The spec's code list has none for this; distribution's
    code is what clients have seen for it."""

    code, status, message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class StorageFull(OCIError):
    """The registry ran out of disk; nothing partial was kept."""

    code, status, message = "UNKNOWN", 507, "registry storage is full; nothing was stored"


class StorageUnwritable(OCIError):
    """The blob store refused the write (permissions, a read-only disk); nothing was kept.
    503: this instance cannot take pushes now (its /readyz says so too), another may."""

    code, status, message = "UNKNOWN", 503, "registry storage refused the write; nothing was stored"


class StorageUnavailable(OCIError):
    """The object store (S3) did not answer or failed; nothing partial was kept or served.
    503: retrying once it is back works."""

    code, status, message = "UNKNOWN", 503, "registry storage is unavailable; try again"


class Unavailable(OCIError):
    """No upstream could answer and nothing usable is cached."""

    code, status, message = "UNAVAILABLE", 503, "service unavailable"


class LoopDetected(OCIError):
    """A proxied request came back to a mirror it already passed (see the Via header)."""

    code, status, message = "LOOP_DETECTED", 508, "mirror loop detected"


ALL_ERRORS: tuple[type[OCIError], ...] = (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
)
