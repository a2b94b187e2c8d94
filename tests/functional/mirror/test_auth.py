"""The mirror against an upstream that requires tokens, and the audit of mirrored pulls."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from tests.support.authkit import (
    ServerFactory,
    audit_rows,
    auth_server,
    bearer,
    cli,
    make_image,
    push,
    sha,
)
from tests.support.live import LiveServer

TIMEOUT = 30


def pull_all(mirror: LiveServer, repo: str, tag: str) -> tuple[str, list[bytes]]:
    r = requests.get(f"{mirror.url}/v2/{repo}/manifests/{tag}", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    doc = json.loads(r.content)
    blobs = []
    for d in [doc["config"], *doc["layers"]]:
        b = requests.get(f"{mirror.url}/v2/{repo}/blobs/{d['digest']}", timeout=TIMEOUT)
        assert b.status_code == 200, b.text
        assert sha(b.content) == d["digest"]
        blobs.append(b.content)
    return r.headers["Docker-Content-Digest"], blobs


def center_with_content(server_factory: ServerFactory) -> tuple[LiveServer, dict[str, str]]:
    center = auth_server(server_factory,
                         env={"STABLEMIRROR_AUTH__PUBLIC_REPOSITORIES": '["public/*"]'})
    admin = bearer(center, "admin", "admin-secret-1", "repository:public/app:push,pull",
                   "repository:private/app:push,pull")
    digests = {}
    for repo in ("public/app", "private/app"):
        img = make_image(repo)
        r = push(center, admin, repo, "v1", img)
        assert r.status_code == 201, r.text
        digests[repo] = img.digest
    return center, digests


def test_anonymous_token_flow_upstream(server_factory: ServerFactory) -> None:
    center, digests = center_with_content(server_factory)
    edge = server_factory("--upstream", center.url, env={"STABLEMIRROR_AUDIT__ENABLED": "true"})
    digest, _ = pull_all(edge, "public/app", "v1")
    assert digest == digests["public/app"]
    # Without credentials the upstream refuses the private repository: an answer, not an
    # outage, so the mirror says DENIED instead of failing over or claiming unavailability.
    r = requests.get(f"{edge.url}/v2/private/app/manifests/v1", timeout=TIMEOUT)
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    # Mirrored pulls are audited like hosted ones.
    pulls = audit_rows(edge, "action = 'manifest.pull'")
    assert [(p["repository"], p["digest"]) for p in pulls] == [("public/app", digest)]


def test_upstream_robot_credentials(server_factory: ServerFactory, tmp_path: Path) -> None:
    center, digests = center_with_content(server_factory)
    created = cli(center, "robot", "create", "edge", "--role", "reader", "--repos", "private/*")
    secret = json.loads(created.stdout)["secret"]
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"mirror": {
        "upstream_groups": {"center": {"upstreams": [
            {"url": center.url, "username": "robot+edge", "password": secret}]}},
        "namespaces": [{"prefix": "", "mode": "proxy", "upstream_group": "center"}]}}))
    edge = server_factory("--config", str(config))
    digest, _ = pull_all(edge, "private/app", "v1")
    assert digest == digests["private/app"]
