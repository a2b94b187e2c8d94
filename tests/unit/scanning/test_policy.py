"""Scanning policies: which one a repository gets, which findings block, exemptions."""

from __future__ import annotations

from stablemirror.scanning.config import ScanPolicySettings
from stablemirror.scanning.exemptions import covers, sign_exemption, verified
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.policy import policy_from_settings, select_scan_policy
from stablemirror.scanning.store import Exemption
from stablemirror.trust.keys import generate_key_pair, load_private_key, load_public_key

GLOBAL = Finding("unsafe_code", "global", "m.pkl", "imports x.y", 2, "x", "y")
SECRET = Finding("secret", "secret:aws", "app/creds", "AWS key", severity="CRITICAL")
LOW_VULN = Finding("vulnerability", "CVE-1", "musl", "low", severity="LOW")
HIGH_VULN = Finding("vulnerability", "CVE-2", "musl", "high", severity="HIGH")


def test_most_specific_pattern_wins() -> None:
    policies = [policy_from_settings(ScanPolicySettings(pattern=p)) for p in
                ("*", "models/*", "models/llama")]
    chosen = select_scan_policy(policies, "models/llama")
    assert chosen is not None and chosen.pattern == "models/llama"
    other = select_scan_policy(policies, "models/mistral")
    assert other is not None and other.pattern == "models/*"
    assert select_scan_policy(policies[1:], "images/x") is None


def test_block_on_categories_and_severity() -> None:
    p = policy_from_settings(ScanPolicySettings(
        pattern="m/*", block_on=["unsafe_code", "vulnerability:HIGH"]))
    assert p.blocking([GLOBAL, SECRET, LOW_VULN, HIGH_VULN]) == [GLOBAL, HIGH_VULN]


def test_namespace_allowed_globals_are_not_findings() -> None:
    p = policy_from_settings(ScanPolicySettings(pattern="m/*", allow_globals=["x.y"]))
    assert p.blocking([GLOBAL]) == []
    q = policy_from_settings(ScanPolicySettings(pattern="m/*", allow_globals=["x.z"]))
    assert q.blocking([GLOBAL]) == [GLOBAL]


def test_exemption_verifies_only_for_its_manifest_and_key() -> None:
    pair = generate_key_pair(b"pw")
    other = generate_key_pair(b"pw")
    key = load_private_key(pair.private_pem, b"pw")
    pub = load_public_key(pair.public_pem)
    e = sign_exemption(key, "m/a", "sha256:" + "a" * 64, "alice", "reviewed", ["global"])
    doc = verified(e, [pub])
    assert doc is not None and doc["actor"] == "alice"
    assert verified(e, [load_public_key(other.public_pem)]) is None
    moved = Exemption("m/b", e.digest, e.document, e.signature, e.key_id)
    assert verified(moved, [pub]) is None  # the row says another repository
    edited = Exemption(e.repository, e.digest, e.document.replace("reviewed", "ok"),
                       e.signature, e.key_id)
    assert verified(edited, [pub]) is None
    assert covers(doc, [GLOBAL]) and not covers(doc, [GLOBAL, SECRET])
