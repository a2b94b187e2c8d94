"""One exception class per OCI error code, rendered once into the spec's JSON body."""

from __future__ import annotations

import json

import pytest

from stablemirror.api.errors import API_VERSION_HEADER, error_response
from stablemirror.oci import errors as e

# The distribution-spec error codes and the status each is answered with.
SPEC_CODES = {
    "BLOB_UNKNOWN": 404,
    "BLOB_UPLOAD_INVALID": 400,
    "BLOB_UPLOAD_UNKNOWN": 404,
    "DIGEST_INVALID": 400,
    "MANIFEST_BLOB_UNKNOWN": 400,
    "MANIFEST_INVALID": 400,
    "MANIFEST_UNKNOWN": 404,
    "NAME_INVALID": 400,
    "NAME_UNKNOWN": 404,
    "SIZE_INVALID": 400,
    "UNAUTHORIZED": 401,
    "DENIED": 403,
    "UNSUPPORTED": 405,
    "TOOMANYREQUESTS": 429,
}


def test_one_class_per_spec_code() -> None:
    codes = [cls.code for cls in e.ALL_ERRORS]
    assert len(codes) == len(set(codes)), "a code has two classes"
    assert set(codes) == set(SPEC_CODES)


@pytest.mark.parametrize("cls", e.ALL_ERRORS, ids=lambda c: c.code)
def test_class_shape(cls: type[e.OCIError]) -> None:
    assert issubclass(cls, e.OCIError)
    assert cls.status == SPEC_CODES[cls.code]
    assert cls.message and cls.message != e.OCIError.message
    err = cls(repository="r", digest="sha256:x")
    assert err.detail == {"repository": "r", "digest": "sha256:x"}
    assert err.headers == {}
    assert "repository=r" in err.describe()
    assert err.describe().startswith(cls.message)


def test_describe_without_detail_is_the_message() -> None:
    assert e.BlobUnknown().describe() == e.BlobUnknown.message


def test_headers_are_per_instance() -> None:
    a, b = e.UploadRangeInvalid(), e.UploadRangeInvalid()
    a.headers["Range"] = "0-9"
    assert b.headers == {}


@pytest.mark.parametrize(
    ("cls", "base", "code", "status"),
    [
        (e.UploadRangeInvalid, e.BlobUploadInvalid, "BLOB_UPLOAD_INVALID", 416),
        (e.ManifestTooLarge, e.ManifestInvalid, "MANIFEST_INVALID", 413),
        (e.StorageFull, e.OCIError, "UNKNOWN", 507),
        (e.RangeInvalid, e.OCIError, "RANGE_INVALID", 416),
        (e.Unavailable, e.OCIError, "UNAVAILABLE", 503),
    ],
)
def test_refinements(cls: type[e.OCIError], base: type[e.OCIError], code: str, status: int) -> None:
    assert issubclass(cls, base)
    assert cls.code == code
    assert cls.status == status


def test_base_error_is_unknown_500() -> None:
    err = e.OCIError()
    assert (err.code, err.status) == ("UNKNOWN", 500)


def test_errors_are_exceptions_with_code_in_args() -> None:
    with pytest.raises(e.OCIError) as info:
        raise e.NameInvalid(name="Bad")
    assert info.value.args[0] == "NAME_INVALID"


@pytest.mark.parametrize("cls", [*e.ALL_ERRORS, e.UploadRangeInvalid, e.ManifestTooLarge,
                                 e.StorageFull], ids=lambda c: c.__name__)
def test_rendered_body(cls: type[e.OCIError]) -> None:
    err = cls(digest="sha256:abc", size=3)
    response = error_response(err)
    assert response.status == cls.status
    assert response.content_type == "application/json"
    for k, v in API_VERSION_HEADER.items():
        assert response.headers[k] == v
    assert isinstance(response.body, bytes)
    doc = json.loads(response.body)
    assert doc == {
        "errors": [
            {"code": cls.code, "message": err.describe(), "detail": {"digest": "sha256:abc",
                                                                     "size": 3}}
        ]
    }


def test_rendered_extra_headers() -> None:
    err = e.UploadRangeInvalid(upload="u")
    err.headers["Range"] = "0-99"
    response = error_response(err)
    assert response.status == 416
    assert response.headers["Range"] == "0-99"
