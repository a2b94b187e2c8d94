"""Release channels on a real server: versions pushed with skopeo, promotion rules,
immutable versions, floating tags, gray release across 1,000 client identities, rollback,
history, the CLI, retention, and every bad input as a 400 with the OCI error body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.support.clients import Clients
from tests.support.live import LiveServer
from tests.support.mirror_support import (
    MANIFEST_ACCEPT,
    OCI_MANIFEST,
    error_codes,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.support.release_support import api, ok, push_versions, release_cli, resolve

VERSIONS = ["1.0.0", "1.1.0", "1.2.0-beta.1"]
IDENTITIES = [f"host-{i:04d}" for i in range(1000)]
pytestmark = pytest.mark.clients


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    d = tmp_path_factory.mktemp("releases") / "data"
    d.mkdir()
    cfg = d.parent / "releases.yml"
    cfg.write_text(json.dumps({"releases": {"pull_flush_seconds": 0.2, "namespaces": [
        {"prefix": "kept/", "retention": {"keep_per_line": 1, "keep_days": 30}},
        {"prefix": "frozen/", "immutable_tags": ["prod-*"], "floating_tags": False}]}}))
    s = LiveServer(d, "--config", str(cfg))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def clients(registry: LiveServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Clients]:
    c = Clients(tmp_path_factory.mktemp("clients"), registry)
    yield c
    c.close()


@pytest.fixture
def pushed(clients: Clients, tmp_path: Path, request: pytest.FixtureRequest
           ) -> tuple[str, dict[str, str]]:
    """A repository of its own with 1.0.0, 1.1.0, 1.2.0-beta.1 pushed by skopeo."""
    repo = f"models/{request.node.name.replace('_', '-').lower()[:60]}"
    return repo, push_versions(clients, tmp_path, repo, VERSIONS)


def channel_digest(registry: LiveServer, repo: str, channel: str, who: str = "anyone") -> str:
    with requests.Session() as s:
        return resolve(s, registry.url, repo, channel, who)


def test_versions_pushed_with_skopeo_get_floating_tags(
        registry: LiveServer, clients: Clients, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    tags = clients.skopeo_json("list-tags", "--tls-verify=false",
                               f"docker://{registry.host}/{repo}")["Tags"]
    assert sorted(tags) == sorted([*VERSIONS, "1", "1.0", "1.1"]), tags
    for floating, version in (("1", "1.1.0"), ("1.0", "1.0.0"), ("1.1", "1.1.0")):
        info = clients.skopeo_json("inspect", "--tls-verify=false",
                                   clients.docker_ref(repo, floating))
        assert info["Digest"] == digests[version], (floating, info["Digest"])
    # a pre-release never moves a floating tag
    listing = ok(api(registry, repo, "versions"))
    assert [v["version"] for v in listing["versions"]] == VERSIONS
    assert {v["version"]: v["floating"] for v in listing["versions"]} == {
        "1.0.0": ["1.0"], "1.1.0": ["1", "1.1"], "1.2.0-beta.1": []}


def test_promotion_follows_the_admission_rules(
        registry: LiveServer, clients: Clients, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    ok(api(registry, repo, "promote", {"version": "1.2.0-beta.1", "channel": "alpha"}))
    ok(api(registry, repo, "promote", {"version": "1.2.0-beta.1", "channel": "beta"}))
    ok(api(registry, repo, "promote", {"version": "1.1.0", "channel": "stable"}))
    refused = api(registry, repo, "promote", {"version": "1.2.0-beta.1", "channel": "stable"})
    assert refused.status_code == 400 and error_codes(refused) == ["RELEASE_INVALID"]
    assert "stable takes releases" in refused.text
    assert channel_digest(registry, repo, "stable") == digests["1.1.0"]
    # --force overrides, and the history says so
    moved = ok(api(registry, repo, "promote", {"version": "1.2.0-beta.1", "channel": "stable",
                                              "force": True, "reason": "hotfix test"}))
    assert moved["forced"] is True
    # channels read as ordinary tags with a real client, and are listed like tags
    for channel, version in (("alpha", "1.2.0-beta.1"), ("beta", "1.2.0-beta.1"),
                             ("stable", "1.2.0-beta.1")):
        info = clients.skopeo_json("inspect", "--tls-verify=false",
                                   clients.docker_ref(repo, channel))
        assert info["Digest"] == digests[version], channel
    tags = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30).json()["tags"]
    assert {"alpha", "beta", "stable"} <= set(tags) and tags == sorted(tags)
    page = requests.get(f"{registry.url}/v2/{repo}/tags/list",
                        params={"n": 2, "last": "1.2.0-beta.1"}, timeout=30).json()["tags"]
    assert page == ["alpha", "beta"]


def test_a_version_is_immutable_and_a_channel_cannot_be_pushed(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    other = make_image(repo, None)
    push_image(registry.url, other, tag="scratch")
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/1.0.0", data=other.manifest,
                     headers={"Content-Type": other.media_type}, timeout=30)
    assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"], r.text
    assert "version 1.0.0 is immutable" in r.text
    # also through ?tag= on a push by digest
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/{other.digest}",
                     params={"tag": "1.1.0"}, data=other.manifest,
                     headers={"Content-Type": other.media_type}, timeout=30)
    assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"], r.text
    got = requests.get(f"{registry.url}/v2/{repo}/manifests/1.0.0",
                       headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert got.headers["Docker-Content-Digest"] == digests["1.0.0"]
    # the same content again is a no-op
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/1.0.0", data=got.content,
                     headers={"Content-Type": got.headers["Content-Type"]}, timeout=30)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digests["1.0.0"]
    # a channel is moved by the API, never pushed
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/stable", data=other.manifest,
                     headers={"Content-Type": other.media_type}, timeout=30)
    assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"], r.text
    assert channel_digest(registry, repo, "stable") == digests["1.0.0"]
    # ... and a channel cannot take a tag's name: tags and channels never share one, which
    # is what lets a GET of a plain tag skip the channel lookup
    r = api(registry, repo, "promote", {"version": "1.0.0", "channel": "scratch"})
    assert r.status_code == 400 and "has a tag scratch" in r.text, r.text
    got = requests.get(f"{registry.url}/v2/{repo}/manifests/scratch",
                       headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert got.headers["Docker-Content-Digest"] == other.digest
    assert "Stablemirror-Channel" not in got.headers


def test_immutability_rules_and_floating_tags_per_namespace(registry: LiveServer) -> None:
    repo = "frozen/model"
    first, second = make_image(repo, None), make_image(repo, None)
    push_image(registry.url, first, tag="prod-eu")
    push_image(registry.url, first, tag="2.0.0")
    push_image(registry.url, first, tag="latest")
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/prod-eu", data=second.manifest,
                     headers={"Content-Type": second.media_type}, timeout=30)
    assert r.status_code == 400 and error_codes(r) == ["TAG_INVALID"], r.text
    push_image(registry.url, second, tag="latest")  # other tags stay mutable
    tags = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30).json()["tags"]
    assert sorted(tags) == ["2.0.0", "latest", "prod-eu"]  # floating tags off here


def test_gray_release_across_1000_identities(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    old, new = digests["1.0.0"], digests["1.1.0"]
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    ok(api(registry, repo, "split", {"channel": "stable",
                                     "weights": {"1.0.0": 90, "1.1.0": 10}}))
    with requests.Session() as s:
        first = {i: resolve(s, registry.url, repo, "stable", i) for i in IDENTITIES}
        assert set(first.values()) == {old, new}
        on_new = {i for i, d in first.items() if d == new}
        assert 70 <= len(on_new) <= 130, len(on_new)  # 10% of 1,000, within 3 points
        # sticky: the same identity gets the same version on every pull, GET or HEAD
        for i in IDENTITIES[:200]:
            assert resolve(s, registry.url, repo, "stable", i) == first[i]
            assert resolve(s, registry.url, repo, "stable", i, method="GET") == first[i]
        # raising the weight moves only new clients in: everyone on 1.1.0 stays there
        ok(api(registry, repo, "split", {"channel": "stable",
                                         "weights": {"1.0.0": 50, "1.1.0": 50}}))
        second = {i: resolve(s, registry.url, repo, "stable", i) for i in IDENTITIES}
        on_new_50 = {i for i, d in second.items() if d == new}
        assert on_new <= on_new_50
        assert 470 <= len(on_new_50) <= 530, len(on_new_50)
        # without a client id, the client address decides: one answer for this host
        anonymous = {resolve(s, registry.url, repo, "stable", None) for _ in range(20)}
        assert len(anonymous) == 1
    # pulls per version are counted (and shown by release list)
    listing = ok(api(registry, repo, "versions"))
    pulls = {v["version"]: v["pulls"] for v in listing["versions"]}
    assert pulls["1.0.0"] + pulls["1.1.0"] >= 2000 + 400
    metrics = requests.get(f"{registry.url}/metrics", timeout=30).text
    assert (f'stablemirror_release_pulls_total{{channel="stable",repository="{repo}",'
            'version="1.1.0"}') in metrics


def test_rollback_steps_back_and_is_seen_on_the_next_pull(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    ok(api(registry, repo, "promote", {"version": "1.1.0", "channel": "stable"}))
    assert channel_digest(registry, repo, "stable") == digests["1.1.0"]
    back = ok(api(registry, repo, "rollback", {"channel": "stable", "reason": "bad eval"}))
    assert [e["version"] for e in back["to"]] == ["1.0.0"] and back["action"] == "rollback"
    assert channel_digest(registry, repo, "stable") == digests["1.0.0"]
    nothing_left = api(registry, repo, "rollback", {"channel": "stable"})
    assert nothing_left.status_code == 400 and "no previous entry" in nothing_left.text
    ok(api(registry, repo, "rollback", {"channel": "stable", "to": "1.1.0"}))
    assert channel_digest(registry, repo, "stable") == digests["1.1.0"]
    history = ok(api(registry, repo, "history", channel="stable"))
    assert [(h["action"], [e["version"] for e in h["to"]]) for h in history] == [
        ("promote", ["1.0.0"]), ("promote", ["1.1.0"]), ("rollback", ["1.0.0"]),
        ("rollback_to", ["1.1.0"])]
    assert history[2]["reason"] == "bad eval"
    assert all(h["actor"] == "anonymous@127.0.0.1" for h in history)


def test_bad_input_is_a_400_naming_the_problem_and_changes_nothing(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    before = ok(api(registry, repo, "history"))
    cases = [
        ("promote", {"version": "9.9.9", "channel": "stable"}, "never pushed"),
        ("promote", {"version": "latest", "channel": "stable"}, "not a SemVer"),
        ("promote", {"version": "1.2.0-beta.1", "channel": "stable"}, "stable takes releases"),
        ("promote", {"version": "1.0.0", "channel": "bad/name"}, "not a valid tag"),
        ("promote", {"version": "1.0.0", "channel": "-x"}, "not a valid tag"),
        ("promote", {"version": "1.0.0", "channel": "2.0"}, "floating tag"),
        ("split", {"channel": "stable", "weights": {"1.0.0": 90, "1.1.0": 20}},
         "sum to 100"),
        ("split", {"channel": "stable", "weights": {"1.0.0": 90, "9.9.9": 10}},
         "never pushed"),
        ("split", {"channel": "stable", "weights": {"1.0.0": 90, "1.2.0-beta.1": 10}},
         "stable takes releases"),
        ("split", {"channel": "no way", "weights": {"1.0.0": 100}}, "not a valid tag"),
        ("split", {"channel": "stable", "weights": "1.0.0=100"}, "VERSION -> WEIGHT"),
        ("rollback", {"channel": "nightly"}, "no channel nightly"),
        ("rollback", {"channel": "stable", "to": "7.0.0"}, "never pushed"),
    ]
    for action, body, words in cases:
        r = api(registry, repo, action, body)
        assert r.status_code == 400, (action, body, r.status_code, r.text)
        assert error_codes(r) == ["RELEASE_INVALID"], r.text
        assert words in r.json()["errors"][0]["message"], (words, r.text)
    r = api(registry, "models/does-not-exist", "promote", {"version": "1.0.0",
                                                           "channel": "stable"})
    assert r.status_code == 400 and "no such repository" in r.text
    assert ok(api(registry, repo, "history")) == before
    assert channel_digest(registry, repo, "stable") == digests["1.0.0"]


def test_cli_promote_split_list_history(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    target = f"{registry.host}/{repo}"
    release_cli(registry, "promote", target, "1.0.0", "--to", "stable", "--reason", "ga")
    out = release_cli(registry, "split", target, "--channel", "stable", "1.0.0=80",
                      "1.1.0=20").stdout
    assert "1.0.0=100 -> 1.0.0=80, 1.1.0=20" in out, out
    listing = release_cli(registry, "list", target).stdout
    lines = [line for line in listing.splitlines() if "sha256:" in line]
    assert [line.split("│")[1].strip() for line in lines] == VERSIONS, listing
    assert "stable 80%" in lines[0] and "stable 20%" in lines[1] and "1, 1.1" in lines[1]
    history = release_cli(registry, "history", target, "--channel", "stable").stdout
    assert "promote" in history and "split" in history and "ga" in history, history
    bad = release_cli(registry, "promote", target, "1.2.0-beta.1", "--to", "stable",
                      check=False)
    assert bad.returncode == 1 and "stable takes releases" in bad.stdout, bad.stdout
    assert channel_digest(registry, repo, "stable") in (digests["1.0.0"], digests["1.1.0"])


def test_retention_dry_run_lists_what_would_go(registry: LiveServer, clients: Clients,
                                               tmp_path: Path) -> None:
    repo = "kept/model"
    digests = push_versions(clients, tmp_path, repo,
                            ["1.0.0", "1.0.1", "1.0.2", "1.0.3", "1.1.0"])
    ok(api(registry, repo, "promote", {"version": "1.0.0", "channel": "stable"}))
    with requests.Session() as s:  # pulled recently: kept
        s.get(f"{registry.url}/v2/{repo}/manifests/1.0.1",
              headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    out = release_cli(registry, "retention", f"{registry.host}/{repo}", "--dry-run").stdout
    assert "would remove (1)" in out and "1.0.2" in out, out
    dry = ok(api(registry, repo, "retention", {"dry_run": True}))
    assert [r["version"] for r in dry["would_remove"]] == ["1.0.2"]
    tags = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30).json()["tags"]
    assert "1.0.2" in tags  # a dry run removes nothing
    done = ok(api(registry, repo, "retention", {"dry_run": False}))
    assert [r["version"] for r in done["removed"]] == ["1.0.2"]
    tags = requests.get(f"{registry.url}/v2/{repo}/tags/list", timeout=30).json()["tags"]
    assert "1.0.2" not in tags and {"1.0.0", "1.0.1", "1.0.3", "1.1.0"} <= set(tags)
    gone = requests.get(f"{registry.url}/v2/{repo}/manifests/{digests['1.0.2']}",
                        headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    assert gone.status_code == 404


def test_the_periodic_retention_job_runs_per_namespace(server_factory: Callable[..., LiveServer],
                                                       tmp_path: Path) -> None:
    cfg = tmp_path / "retention.yml"
    cfg.write_text(json.dumps({"releases": {"retention_interval_seconds": 0.5, "namespaces": [
        {"prefix": "short/", "retention": {"enabled": True, "keep_per_line": 1,
                                           "keep_days": 30}}]}}))
    srv = server_factory("--config", str(cfg))
    for repo in ("short/model", "long/model"):
        for version in ("1.0.0", "1.0.1"):
            push_image(srv.url, make_image(repo, None), tag=version)

    def tags(repo: str) -> list[str]:
        return list(requests.get(f"{srv.url}/v2/{repo}/tags/list", timeout=30).json()["tags"])

    deadline = time.monotonic() + 20
    while "1.0.0" in tags("short/model") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "1.0.0" not in tags("short/model"), srv.log()[-3000:]
    assert "1.0.1" in tags("short/model")
    assert {"1.0.0", "1.0.1"} <= set(tags("long/model"))  # no retention configured there


def test_promotion_keeps_signatures_and_referrers_attached(
        registry: LiveServer, pushed: tuple[str, dict[str, str]]) -> None:
    repo, digests = pushed
    subject = requests.get(f"{registry.url}/v2/{repo}/manifests/1.1.0",
                           headers={"Accept": MANIFEST_ACCEPT}, timeout=30)
    config = b"{}"
    push_blob(registry.url, repo, config)
    signature = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [],
        "subject": {"mediaType": subject.headers["Content-Type"], "digest": digests["1.1.0"],
                    "size": len(subject.content)}}).encode()
    r = requests.put(f"{registry.url}/v2/{repo}/manifests/{sha256(signature)}",
                     data=signature, headers={"Content-Type": OCI_MANIFEST}, timeout=30)
    assert r.status_code == 201, r.text
    ok(api(registry, repo, "promote", {"version": "1.1.0", "channel": "stable"}))
    served = channel_digest(registry, repo, "stable")
    assert served == digests["1.1.0"]  # the very manifest pushed: nothing was re-pushed
    referrers = requests.get(f"{registry.url}/v2/{repo}/referrers/{served}", timeout=30).json()
    assert [m["digest"] for m in referrers["manifests"]] == [sha256(signature)]


def test_cli_promote_preheats_node_caches(
        registry: LiveServer, pushed: tuple[str, dict[str, str]],
        server_factory: Callable[..., LiveServer]) -> None:
    """`release promote ... --preheat NODES`: the nodes hold the version before a client
    asks (docs/p2p.md, Preheat)."""
    repo, digests = pushed
    nodes = [server_factory("--role", "node", "--upstream", registry.url) for _ in range(2)]
    target = f"{registry.host}/{repo}"
    out = release_cli(registry, "promote", target, "1.1.0", "--to", "stable", "--preheat",
                      ",".join(n.host for n in nodes)).stdout
    assert out.count("1 manifest(s), 2 blob(s)") == 2, out
    for node in nodes:  # in the node's store already: layer and config files
        blobs = {p.name for p in (node.data_dir / "blobs" / "sha256").glob("*/*")}
        manifest = requests.get(f"{registry.url}/v2/{repo}/manifests/1.1.0", timeout=30,
                                headers={"Accept": MANIFEST_ACCEPT}).json()
        assert {d["digest"][7:] for d in [manifest["config"], *manifest["layers"]]} <= blobs
    assert channel_digest(registry, repo, "stable") == digests["1.1.0"]
