"""A data dir whose blobs/ or uploads/ refuse writes: /readyz says not ready (naming the
directory), and a push answers a clean OCI error, never a 500 carrying a Python exception."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.functional.test_startup_errors import unwritable
from tests.support.live import LiveServer
from tests.support.oci_http import digest_of, error_codes, random_bytes

TIMEOUT = 30


def push_blob(srv: LiveServer, data: bytes) -> requests.Response:
    return requests.post(f"{srv.url}/v2/app/blobs/uploads/", params={"digest": digest_of(data)},
                         data=data, timeout=TIMEOUT,
                         headers={"Content-Type": "application/octet-stream"})


def assert_refused_cleanly(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert error_codes(r) == ["UNKNOWN"], r.text
    message = r.json()["errors"][0]["message"]
    assert "refused the write; nothing was stored" in message, message
    for python_name in ("PermissionError", "OSError", "Errno"):
        assert python_name not in r.text, r.text


@pytest.mark.parametrize("directory", ["blobs", "uploads"])
def test_readiness_and_pushes_when_a_push_directory_is_unwritable(server: LiveServer,
                                                                  directory: str) -> None:
    ready = requests.get(f"{server.url}/readyz", timeout=TIMEOUT)
    assert ready.status_code == 200 and ready.json()["checks"][directory] == "ok", ready.text
    data = random_bytes(4096)
    path: Path = server.data_dir / directory
    with unwritable(path):
        r = requests.get(f"{server.url}/readyz", timeout=TIMEOUT)
        assert r.status_code == 503, r.text
        reason = r.json()["reason"]
        assert reason.startswith(f"{directory}: ") and reason.endswith(f": {path}"), reason
        assert_refused_cleanly(push_blob(server, data))
        assert "Traceback" not in server.log()
    assert requests.get(f"{server.url}/readyz", timeout=TIMEOUT).status_code == 200
    assert push_blob(server, data).status_code == 201
    assert requests.get(f"{server.url}/v2/app/blobs/{digest_of(data)}",
                        timeout=TIMEOUT).content == data
