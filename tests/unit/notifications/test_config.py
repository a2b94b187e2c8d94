"""`notifications.endpoints[]` mistakes stop the start in one line naming the endpoint, and
the line never holds the secret or a header value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stablemirror.config import SettingsError, load_settings

SECRET = "s3cr3t-value-nobody-may-see"


def load(tmp_path: Path, **endpoint: Any) -> Any:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"notifications": {"endpoints": [
        {"name": "hooks", "url": "http://127.0.0.1:9/events", **endpoint}]}}))
    return load_settings(cfg)


def test_a_good_endpoint_loads_with_its_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, secret=SECRET, headers={"Authorization": "Bearer " + SECRET})
    e = s.notifications.endpoints[0]
    assert e.actions == ["push", "delete", "mount", "promote"]
    assert e.secret.get_secret_value() == SECRET
    assert SECRET not in repr(s)


@pytest.mark.parametrize(("endpoint", "words"), [
    ({"secret": "short"}, "secret must be at least 16 characters"),
    ({"secret": 12345678901234567}, "secret must be a string"),
    ({"headers": {"Bad Name": SECRET}}, "header name 'Bad Name' is not a token"),
    ({"headers": {"X-Token": SECRET + "\nInjected: 1"}}, "line break"),
    ({"headers": {"X-Token": 5}}, "must have a string value"),
    ({"url": f"http://user:{SECRET}@127.0.0.1/"}, "must not hold credentials"),
    ({"url": "ftp://127.0.0.1/"}, "url must be an http:// or https:// URL"),
    ({"name": "has space"}, "name must be"),
    ({"backoff_seconds": 10, "backoff_max_seconds": 1}, "backoff_max_seconds is below"),
    ({"timeout_seconds": 60}, "below notifications.lease_seconds"),
    ({"actions": ["pull"]}, "actions"),
])
def test_mistakes_are_one_line_without_secrets(tmp_path: Path, endpoint: dict[str, Any],
                                               words: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(tmp_path, **{"secret": SECRET, **endpoint})
    line = str(err.value)
    assert "\n" not in line and words in line, line
    assert SECRET not in line and "12345678901234567" not in line, line


def test_an_endpoint_named_twice_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    one = {"name": "a", "url": "http://127.0.0.1:9/"}
    cfg.write_text(json.dumps({"notifications": {"endpoints": [one, one]}}))
    with pytest.raises(SettingsError, match="named twice"):
        load_settings(cfg)
