"""Settings precedence: command line > STABLEMIRROR_* environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stablemirror.config import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "stablemirror.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STABLEMIRROR_LISTEN", raising=False)
    s = load_settings()
    assert s.listen == "127.0.0.1:5000"
    assert s.index_url.startswith("sqlite:///") and s.index_url.endswith("/index.db")
    assert s.worker_count >= 1


def test_file_then_environment_then_command_line(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "listen: 127.0.0.1:6001\nworkers: 3\ngc:\n  grace_seconds: 10\n")
    assert load_settings(config).listen == "127.0.0.1:6001"
    monkeypatch.setenv("STABLEMIRROR_LISTEN", "127.0.0.1:6002")
    monkeypatch.setenv("STABLEMIRROR_GC__GRACE_SECONDS", "20")
    s = load_settings(config)
    assert (s.listen, s.workers, s.gc.grace_seconds) == ("127.0.0.1:6002", 3, 20.0)
    s = load_settings(config, listen="127.0.0.1:6003", workers=None)
    assert (s.listen, s.workers) == ("127.0.0.1:6003", 3)  # None means "not given"


def test_unknown_and_invalid_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        load_settings(write(tmp_path, "listne: 127.0.0.1:1\n"))
    with pytest.raises(ValidationError):
        load_settings(write(tmp_path, "workers: -1\n"))


def test_upstream_quick_form_makes_a_proxy_namespace() -> None:
    s = load_settings(upstream=["http://a:5000", "http://b:5000"])
    groups, namespaces = s.mirror.effective(s.upstream)
    upstreams = groups["default"].upstreams
    assert [(u.url, u.backup) for u in upstreams] == [("http://a:5000", False),
                                                      ("http://b:5000", True)]
    assert [(n.prefix, n.mode, n.upstream_group) for n in namespaces] == [
        ("", "proxy", "default")]
