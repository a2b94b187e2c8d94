"""GET /v2/ and what every answer carries."""

from __future__ import annotations

from tests.support.live import LiveServer
from tests.support.oci_http import Api, assert_error, raw_request


def test_base_endpoint(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    for path in ("/v2/", "/v2"):
        r = api.get(path)
        assert r.status_code == 200, path
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert r.json() == {}
    r = api.head("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_errors_are_json_with_the_api_version(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    r = api.manifest("library/none", "latest")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    doc = r.json()
    (err,) = doc["errors"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err.get("detail"), dict)


def test_unsupported_method_on_a_known_route(shared_server: LiveServer) -> None:
    api = Api(shared_server)
    assert_error(api.request("POST", "/v2/r/manifests/latest"), 405, "UNSUPPORTED")
    assert_error(api.request("PATCH", "/v2/r/tags/list"), 405, "UNSUPPORTED")
    assert_error(api.request("DELETE", "/v2/_catalog"), 405, "UNSUPPORTED")


def test_raw_request_with_keepalive_headers(shared_server: LiveServer) -> None:
    r = raw_request(shared_server, "GET", "/v2/")
    assert r.status == 200
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
