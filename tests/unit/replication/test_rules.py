"""Rule settings, filters and cron expressions (pure): what a rule admits, and each
configuration mistake as one SettingsError line naming the setting."""

from __future__ import annotations

import calendar
import json
from pathlib import Path

import pytest

from stablemirror.config import SettingsError, load_settings
from stablemirror.replication.config import parse_rate
from stablemirror.replication.cron import CronInvalid, parse_cron
from stablemirror.replication.filters import parse_tag_filter, repository_matches
from stablemirror.replication.references import LayoutReference, parse_transport


@pytest.mark.parametrize(("spec", "admitted", "refused"), [
    ("semver:>=1.2.0 <2.0.0", ["1.2.0", "1.9.9", "v1.3.0"], ["1.1.9", "2.0.0", "latest"]),
    ("semver:^0.3", ["0.3.0", "0.3.9"], ["0.4.0", "0.2.9"]),
    ("semver:~1.4.2", ["1.4.2", "1.4.9"], ["1.5.0", "1.4.1"]),
    ("semver:1.2", ["1.2.0", "1.2.7"], ["1.3.0"]),
    ("semver:>=1.0.0-rc.1", ["1.0.0-rc.1", "1.0.0", "1.0.0-rc.2"], ["1.0.0-beta.1"]),
    (r"v\d+\.\d+|latest", ["v1.2", "latest"], ["v1.2.3", "latest2", "dev"]),
    (None, ["anything", "latest"], [f"sha256-{'ab' * 32}.sig", f"sha256-{'ab' * 32}"]),
])
def test_tag_filters(spec: str | None, admitted: list[str], refused: list[str]) -> None:
    f = parse_tag_filter(spec)
    assert [t for t in admitted if not f.admits(t)] == []
    assert [t for t in refused if f.admits(t)] == []


def test_repository_globs() -> None:
    assert repository_matches("models/llama/7b", ["models/*"])
    assert not repository_matches("base/alpine", ["models/*", "tools/**"])
    assert repository_matches("anything", [])


def test_cron_ticks() -> None:
    hourly = parse_cron("0 * * * *")
    at = calendar.timegm((2026, 12, 1, 14, 0, 0)) // 60
    assert hourly.matches(at) and not hourly.matches(at + 1)
    weekdays = parse_cron("*/15 9-17 * * 1-5")
    monday = calendar.timegm((2026, 11, 30, 9, 45, 0)) // 60  # a Monday
    assert weekdays.matches(monday)
    assert not weekdays.matches(monday + 5 * 24 * 60)  # Saturday
    sunday = parse_cron("0 0 * * 7")
    assert sunday.matches(calendar.timegm((2026, 11, 29, 0, 0, 0)) // 60)
    for bad in ("* * * *", "61 * * * *", "a * * * *", "*/0 * * * *"):
        with pytest.raises(CronInvalid):
            parse_cron(bad)


def test_rates() -> None:
    assert parse_rate("100Mbit") == 12_500_000
    assert parse_rate("64MiB") == 64 << 20
    assert parse_rate("50MB/s") == 50_000_000
    assert parse_rate(1000) == 1000


def test_transport_references() -> None:
    assert parse_transport("oci:/tmp/x:v1") == LayoutReference(Path("/tmp/x"), "v1")
    digest = "sha256:" + "ab" * 32
    assert parse_transport(f"oci:/tmp/x:{digest}") == LayoutReference(Path("/tmp/x"), digest)
    assert parse_transport("oci:/tmp/x") == LayoutReference(Path("/tmp/x"))
    ref = parse_transport("docker://127.0.0.1:5000/a/b:v2")
    assert str(ref) == "127.0.0.1:5000/a/b:v2"


def _load(tmp_path: Path, rule: dict[str, object]) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"replication": {"rules": [rule]}}))
    with pytest.raises(SettingsError) as err:
        load_settings(path, data_dir=tmp_path)
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(("rule", "says"), [
    ({"name": "r", "destination": "https://eu", "trigger": {"cron": "0 * *"}},
     "replication.rules.trigger.cron"),
    ({"name": "r", "destination": "https://eu", "filters": {"tags": "semver:>=x"}},
     "replication.rules.filters.tags"),
    ({"name": "r", "destination": "https://eu", "filters": {"tags": "("}},
     "not a regular expression"),
    ({"name": "r", "source": "https://a", "destination": "https://eu"},
     "mode push copies from this registry"),
    ({"name": "r", "mode": "pull", "source": "https://a", "destination": "https://b"},
     "destination must be `self`"),
    ({"name": "r", "mode": "sideways", "destination": "https://eu"},
     "replication.rules.mode"),
    ({"name": "r", "destination": "https://eu", "bandwidth_limit": "fast"},
     "not a rate"),
    ({"name": "bad name!", "destination": "https://eu"}, "replication.rules.name"),
    ({"name": "r", "destination": "https://eu", "unknown": 1}, "unknown"),
])
def test_rule_mistakes_are_one_line(tmp_path: Path, rule: dict[str, object],
                                    says: str) -> None:
    assert says in _load(tmp_path, rule)


def test_a_good_rule_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"replication": {"rules": [{
        "name": "models-to-eu", "mode": "push", "destination": "https://eu.example:5000",
        "filters": {"repositories": ["models/*"], "tags": "semver:^1", "channels": ["stable"],
                    "platforms": ["linux/amd64"], "signed_only": True},
        "trigger": {"event": True, "cron": "0 * * * *"}, "delete": "propagate",
        "bandwidth_limit": "100Mbit", "parallel_streams": 8, "destination_prefix": "eu/",
        "credentials": {"destination": {"username": "robot", "password": "s3cret"}}}]}}))
    rule = load_settings(path, data_dir=tmp_path).replication.rules[0]
    assert rule.rate == 12_500_000 and rule.destination_prefix == "eu/"
