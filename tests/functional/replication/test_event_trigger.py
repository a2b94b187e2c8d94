"""An event-triggered push rule between two real stablemirror processes: the source's
registry events (published by registry/publishing.py) reach its replication trigger through
the same fan-out as the notification endpoints, and each becomes a durable job that copies
the change to the destination: a skopeo push signed with `stablemirror sign` (the signature
tag follows by its own event), a moved tag, a delete."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from stablemirror.trust import keys as cosign_keys
from stablemirror.trust.keys import SCRYPT_LEGACY
from tests.support.clients import Clients, OciLayout, require_tool
from tests.support.live import LiveServer
from tests.support.mirror_support import make_image, push_image, running_server
from tests.support.oci_http import wait_until
from tests.support.replication_support import manifest_bytes
from tests.support.trust_support import PASSWORD, cli

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def regions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    root: Path = tmp_path_factory.mktemp("event-regions")
    with running_server(root / "region2") as destination:
        config = root / "region1.yaml"
        config.write_text(json.dumps({
            "jobs": {"poll_seconds": 0.2, "backoff_seconds": 0.5},
            "replication": {"rules": [{
                "name": "to-region2", "mode": "push", "destination": destination.url,
                "filters": {"repositories": ["ev/*"]}, "trigger": {"event": True},
                "delete": "propagate"}]}}))
        with running_server(root / "region1", "--config", str(config),
                            workers=2) as source:
            yield source, destination


def test_push_move_and_delete_follow_by_event(regions: tuple[LiveServer, LiveServer],
                                              tmp_path: Path) -> None:
    source, destination = regions
    clients = Clients(tmp_path / "clients", source)
    layout = OciLayout(tmp_path / "layout")
    built = layout.add_image([300_000, 20_000])
    layout.tag("v1", built.manifest)
    clients.skopeo("copy", layout.ref("v1"), clients.docker_ref("ev/app", "v1"))
    key = tmp_path / "dev.key"  # made here: a `key generate` process costs seconds
    key.write_bytes(cosign_keys.encrypt_private_key(ec.generate_private_key(ec.SECP256R1()),
                                                    PASSWORD.encode(), SCRYPT_LEGACY))
    cli("sign", "--key", str(key), "--identity", "dev@ev", f"{source.host}/ev/app:v1")
    digest = built.manifest.digest
    sig_tag = f"sha256-{digest.split(':')[1]}.sig"
    signature = manifest_bytes(source.url, "ev/app", sig_tag)
    assert signature is not None
    def there(ref: str) -> bytes | None:
        return manifest_bytes(destination.url, "ev/app", ref)

    wait_until(lambda: there("v1") == built.manifest_bytes, TIMEOUT,
               "the pushed image at the destination")
    wait_until(lambda: there(sig_tag) == signature, TIMEOUT,
               "its signature tag at the destination")
    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw",
                          f"docker://{destination.host}/ev/app:v1"],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == built.manifest_bytes

    # Outside the rule's filter: never copied (checked after a later event has been copied).
    push_image(source.url, make_image("other/app", "v1", (1_000,)))
    moved = push_image(source.url, make_image("ev/app", "v1", (10_000,)))
    wait_until(lambda: there("v1") == moved.manifest, TIMEOUT,
               "the moved tag at the destination")
    assert manifest_bytes(destination.url, "other/app", "v1") is None

    r = requests.delete(f"{source.url}/v2/ev/app/manifests/{digest}", timeout=10)
    assert r.status_code == 202, r.text
    wait_until(lambda: there(digest) is None, TIMEOUT, "the delete at the destination")
    assert manifest_bytes(destination.url, "ev/app", "v1") == moved.manifest

    status = requests.get(f"{source.url}/api/v1/replication/status", timeout=10)
    assert status.status_code == 200, status.text
    rows = {row["rule"]: row for row in status.json()["rules"]}
    wait_until(lambda: {row["rule"]: row for row in requests.get(
        f"{source.url}/api/v1/replication/status", timeout=10).json()["rules"]
    }["to-region2"]["lag_seconds"] == 0.0, TIMEOUT, "the rule's lag back to 0")
    assert rows["to-region2"]["artifacts_copied"] >= 2, rows
