"""The audit trail of a live server: every change and pull on the record with who, from
where, what and how it ended; tag moves; the retention job pruning while the chain stays
verifiable through a signed checkpoint; JSON-lines forwarding to a file and to syslog; and
auditing switched on without auth."""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import requests

from tests.support.authkit import (
    ADMIN_PASSWORD,
    OCI_MANIFEST,
    TIMEOUT,
    audit_rows,
    auth_server,
    bearer,
    cli,
    db_rows,
    get_manifest,
    h,
    make_image,
    push,
)
from tests.support.live import LiveServer

ServerFactory = Callable[..., LiveServer]


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_pushes_pulls_tag_moves_and_deletes_are_recorded(
        server_factory: ServerFactory) -> None:
    srv = auth_server(server_factory)
    tok = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull,push,delete")
    first, second = make_image(), make_image()
    assert push(srv, tok, "team/model", "latest", first).status_code == 201
    assert push(srv, tok, "team/model", "latest", second).status_code == 201  # tag moves
    ua = {"User-Agent": "audit-test/1.0"}
    r = requests.get(f"{srv.url}/v2/team/model/manifests/latest",
                     headers={**h(tok), **ua, "Accept": OCI_MANIFEST}, timeout=TIMEOUT)
    assert r.status_code == 200
    r = requests.head(f"{srv.url}/v2/team/model/manifests/latest", headers=h(tok),
                      timeout=TIMEOUT)
    assert r.status_code == 200  # a HEAD is not a pull: not recorded
    r = requests.delete(f"{srv.url}/v2/team/model/manifests/latest", headers=h(tok),
                        timeout=TIMEOUT)
    assert r.status_code == 202
    r = requests.delete(f"{srv.url}/v2/team/model/manifests/{first.digest}", headers=h(tok),
                        timeout=TIMEOUT)
    assert r.status_code == 202

    rows = audit_rows(srv, "repository = 'team/model'")
    actions = [(x["action"], x["reference"], x["digest"]) for x in rows
               if x["action"].startswith(("manifest.", "tag."))]
    assert actions == [
        ("manifest.push", "latest", first.digest),
        ("manifest.push", "latest", second.digest),
        ("tag.move", "latest", second.digest),
        ("manifest.pull", "latest", second.digest),
        ("tag.delete", "latest", second.digest),
        ("manifest.delete", first.digest, first.digest),
    ], actions
    move = next(x for x in rows if x["action"] == "tag.move")
    assert move["detail"] == {"from": first.digest, "to": second.digest}
    pull = next(x for x in rows if x["action"] == "manifest.pull")
    assert (pull["actor"], pull["client"], pull["user_agent"], pull["result"]) == (
        "admin", "127.0.0.1", "audit-test/1.0", "ok")
    assert sum(x["action"] == "blob.push" for x in rows) == 4
    # Every record has a time, a request id and links to the one before it.
    chain = db_rows(srv, "SELECT seq, time, request_id, prev_hash, hash FROM audit_log "
                    "ORDER BY seq")
    for (_s, _t, _r, _p, prev_hash), (_s2, when, request_id, prev, _h) in itertools.pairwise(chain):
        assert prev == prev_hash and when > 0 and request_id
    assert cli(srv, "audit", "verify").returncode == 0


def test_retention_job_prunes_and_the_chain_still_verifies(
        server_factory: ServerFactory) -> None:
    # Retention of ~3 s, checked every second: records age out during the test.
    srv = auth_server(server_factory, env={
        "STABLEMIRROR_AUDIT__RETENTION_DAYS": str(3 / 86400),
        "STABLEMIRROR_AUDIT__PRUNE_INTERVAL_SECONDS": "1"})
    tok = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull,push")
    img = make_image()
    assert push(srv, tok, "team/model", "v1", img).status_code == 201
    early = db_rows(srv, "SELECT max(seq) FROM audit_log")[0][0]
    assert wait_for(lambda: db_rows(srv, "SELECT count(*) FROM audit_checkpoints")[0][0] > 0
                    and db_rows(srv, "SELECT min(seq) FROM audit_log")[0][0] > early)
    for _ in range(3):
        assert get_manifest(srv, tok, "team/model", "v1").status_code == 200
    out = json.loads(cli(srv, "audit", "verify", "--json").stdout)
    assert out["ok"] and out["checkpoints"] >= 1 and out["first_seq"] > early, out
    assert any(x["action"] == "audit.prune" for x in audit_rows(srv))
    # The checkpoint is what vouches for the pruned prefix: forging it breaks verify.
    db_rows(srv, "UPDATE audit_checkpoints SET payload = replace(payload, "
            "'\"pruned\":', '\"pruned\":1') WHERE id = 1")
    broken = cli(srv, "audit", "verify", check=False)
    assert broken.returncode == 1 and "checkpoint" in broken.stdout, broken.stdout


def test_records_are_forwarded_as_json_lines(server_factory: ServerFactory,
                                             tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(10)
    try:
        srv = auth_server(server_factory, env={
            "STABLEMIRROR_AUDIT__FORWARD_FILE": str(out),
            "STABLEMIRROR_AUDIT__FORWARD_SYSLOG": f"127.0.0.1:{sink.getsockname()[1]}",
            "STABLEMIRROR_AUDIT__FORWARD_INTERVAL_SECONDS": "0.2"})
        tok = bearer(srv, "admin", ADMIN_PASSWORD, "repository:team/model:pull,push")
        assert push(srv, tok, "team/model", "v1", make_image()).status_code == 201
        assert get_manifest(srv, tok, "team/model", "v1").status_code == 200
        last = db_rows(srv, "SELECT max(seq) FROM audit_log")[0][0]

        def forwarded() -> list[dict[str, object]]:
            if not out.exists():
                return []
            return [json.loads(line) for line in out.read_text().splitlines()]

        assert wait_for(lambda: any(r["seq"] == last for r in forwarded()))
        lines = forwarded()
        assert [r["seq"] for r in lines] == list(range(1, len(lines) + 1))  # once, in order
        stored = dict(db_rows(srv, "SELECT seq, hash FROM audit_log"))
        assert all(stored[r["seq"]] == r["hash"] for r in lines)
        pull = next(r for r in lines if r["action"] == "manifest.pull")
        assert pull["actor"] == "admin" and pull["repository"] == "team/model"
        datagram = sink.recv(65536).decode()
        assert "stablemirror-audit:" in datagram and '"seq":1' in datagram, datagram
    finally:
        sink.close()


def test_audit_without_auth_records_anonymous_changes(server_factory: ServerFactory) -> None:
    srv = server_factory(env={"STABLEMIRROR_AUDIT__ENABLED": "true"})
    img = make_image()
    assert push(srv, "unused", "team/model", "v1", img).status_code == 201
    assert get_manifest(srv, None, "team/model", "v1").status_code == 200
    rows = audit_rows(srv, "action LIKE 'manifest.%'")
    assert [(x["action"], x["actor"], x["digest"]) for x in rows] == [
        ("manifest.push", "", img.digest), ("manifest.pull", "", img.digest)]
    assert cli(srv, "audit", "verify").returncode == 0
