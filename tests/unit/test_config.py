"""Settings precedence: command line > STABLEMIRROR_* environment > YAML file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from stablemirror.config import SettingsError, load_settings


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
    with pytest.raises(SettingsError, match="unknown setting 'listne'"):
        load_settings(write(tmp_path, "listne: 127.0.0.1:1\n"))
    with pytest.raises(SettingsError, match="workers -1: must be at least 1"):
        load_settings(write(tmp_path, "workers: -1\n"))


def test_upstream_quick_form_makes_a_proxy_namespace() -> None:
    s = load_settings(upstream=["http://a:5000", "http://b:5000"])
    groups, namespaces = s.mirror.effective(s.upstream)
    upstreams = groups["default"].upstreams
    assert [(u.url, u.backup) for u in upstreams] == [("http://a:5000", False),
                                                      ("http://b:5000", True)]
    assert [(n.prefix, n.mode, n.upstream_group) for n in namespaces] == [
        ("", "proxy", "default")]


def refused(**cli: object) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**cli)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("listen", "why"), [
    ("localhost", "expected HOST:PORT"),
    ("localhost:", "expected HOST:PORT"),
    ("::1", "expected HOST:PORT"),
    ("localhost:http", "port 'http' is not a number"),
    ("localhost:0", "port 0 is out of range 1-65535"),
    ("localhost:65536", "port 65536 is out of range 1-65535"),
])
def test_listen_must_be_host_and_port(listen: str, why: str) -> None:
    assert refused(listen=listen).startswith(f"--listen {listen!r}: {why}")


@pytest.mark.parametrize(("listen", "host_port"), [
    ("localhost:5000", ("localhost", 5000)), (":5001", ("127.0.0.1", 5001)),
    ("[::1]:5002", ("::1", 5002)), ("0.0.0.0:65535", ("0.0.0.0", 65535)),
])
def test_listen_forms_that_are_accepted(listen: str, host_port: tuple[str, int]) -> None:
    assert load_settings(listen=listen).host_port == host_port


def test_workers_zero_is_refused_not_taken_as_cpu_count() -> None:
    assert refused(workers=0) == "--workers 0: must be at least 1"
    assert load_settings(workers=3).worker_count == 3


@pytest.mark.parametrize("url", ["notaurl", "ftp://center:5000", "http://", "http://h:99999"])
def test_upstream_must_be_an_http_url(url: str) -> None:
    message = refused(upstream=[url])
    assert message.startswith(f"--upstream {url!r}: "), message


@pytest.mark.parametrize(("replicas", "expected"), [
    ("advertise_url: http://10.0.0.5:5000", "needs both advertise_url and secret"),
    ("secret: 0123456789abcdef", "needs both advertise_url and secret"),
    ("advertise_url: 10.0.0.5:5000\n    secret: 0123456789abcdef",
     "mirror.replicas.advertise_url '10.0.0.5:5000': expected an http"),
])
def test_replica_settings_come_whole(tmp_path: Path, replicas: str, expected: str) -> None:
    config = write(tmp_path, f"upstream: [http://center:5000]\nmirror:\n  replicas:\n"
                             f"    {replicas}\n")
    with pytest.raises(SettingsError, match=expected):
        load_settings(config)


def test_upstream_urls_of_groups_are_checked_too(tmp_path: Path) -> None:
    config = write(tmp_path, "mirror:\n  upstream_groups:\n    hub:\n      upstreams:\n"
                             "        - url: center:5000\n")
    with pytest.raises(SettingsError, match=r"mirror.upstream_groups.hub.upstreams\[0\].url "
                                            r"'center:5000': expected an http"):
        load_settings(config)


def test_a_missing_config_file_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"--config '.*no-such.yaml': no such file"):
        load_settings(tmp_path / "no-such.yaml")
    with pytest.raises(SettingsError, match="not a file"):
        load_settings(tmp_path)


def test_a_config_file_that_is_not_yaml_or_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid YAML at line 2"):
        load_settings(write(tmp_path, "listen: [1\n"))
    with pytest.raises(SettingsError, match="expected a mapping of settings, got list"):
        load_settings(write(tmp_path, "- listen\n"))
    assert load_settings(write(tmp_path, "")).listen == "127.0.0.1:5000"  # empty: defaults


@pytest.mark.parametrize(("text", "name"), [
    ("auth:\n  enabeld: true\n", "auth.enabeld"),
    ("gc:\n  grace_second: 1\n", "gc.grace_second"),
    ("mirror:\n  namespaces:\n    - prefix: a/\n      upstream_grp: x\n",
     "mirror.namespaces[0].upstream_grp"),
])
def test_unknown_nested_keys_in_the_file_are_refused(tmp_path: Path, text: str,
                                                      name: str) -> None:
    with pytest.raises(SettingsError, match=f"unknown setting '{name}'".replace("[", r"\[")):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(("name", "hint"), [
    ("STABLEMIRROR_AUTH_ENABLED", "STABLEMIRROR_AUTH__ENABLED"),
    ("STABLEMIRROR_GC__GRACE_SECOND", "STABLEMIRROR_GC__GRACE_SECONDS"),
    ("STABLEMIRROR_LISTNE", "STABLEMIRROR_LISTEN"),
    ("STABLEMIRROR_LISTEN__PORT", None),  # a string has no sub-settings
    ("STABLEMIRROR_QQQ", None),
])
def test_unknown_environment_variables_are_refused(monkeypatch: pytest.MonkeyPatch,
                                                   name: str, hint: str | None) -> None:
    monkeypatch.setenv(name, "true")
    message = refused()
    assert message.startswith(f"unknown environment variable {name}: no such setting")
    assert (f"did you mean {hint}?" in message) if hint else "did you mean" not in message


def test_known_environment_variables_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("STABLEMIRROR_AUTH__ENABLED", "true"),
                        ("STABLEMIRROR_INTEGRITY__SCRUB__INTERVAL_SECONDS", "5"),
                        ("STABLEMIRROR_MIRROR__CACHE__MAX_BYTES", "1000"),
                        ("STABLEMIRROR_ADMIN_PASSWORD", "secret-pass"),
                        # read directly by the CLI and the test suite, not settings
                        ("STABLEMIRROR_PASSWORD", "x"), ("STABLEMIRROR_KEY_PASSWORD", "x"),
                        ("STABLEMIRROR_TEST_ROOT", "/tmp")]:
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.auth.enabled and s.mirror.cache.max_bytes == 1000


def test_an_invalid_value_names_the_variable_it_came_from(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STABLEMIRROR_WORKERS", "0")
    assert refused() == "STABLEMIRROR_WORKERS '0': must be at least 1"


def test_role_defaults() -> None:
    center = load_settings()
    assert center.role == "center" and center.upstream == []
    node = load_settings(role="node", upstream=["http://edge:5000"])
    assert node.worker_count == 1 and node.host_port == ("127.0.0.1", 5000)
    assert load_settings(role="node", upstream=["http://e:5000"], workers=2).worker_count == 2
    edge = load_settings(role="edge", upstream=["http://center:5000"])
    assert edge.worker_count == center.worker_count


@pytest.mark.parametrize("role", ["edge", "node"])
def test_edge_and_node_need_an_upstream(role: str) -> None:
    assert refused(role=role).startswith(f"role {role!r} pulls through an upstream")


UP = ["http://edge:5000"]


def test_the_index_backend_by_placement() -> None:
    """auto: the stdlib-sqlite3 index for a node that needs nothing more (docs/footprint.md),
    SQLAlchemy for everything else; either can be forced."""
    assert load_settings(role="node", upstream=UP).index_backend == "sqlite3"
    assert load_settings().index_backend == "sqlalchemy"
    assert load_settings(role="edge", upstream=UP).index_backend == "sqlalchemy"
    for needs in ({"auth": {"enabled": True}}, {"audit": {"enabled": True}},
                  {"database_url": "postgresql+psycopg://db/x"},
                  {"mirror": {"namespaces": [{"prefix": "", "mode": "both",
                                              "upstream_group": "g"}],
                              "upstream_groups": {"g": {"upstreams": [{"url": UP[0]}]}}}}):
        node = load_settings(role="node", upstream=UP, **needs)
        assert node.index_backend == "sqlalchemy", needs
    forced = load_settings(role="node", upstream=UP, database={"backend": "sqlalchemy"})
    assert forced.index_backend == "sqlalchemy"
    center = load_settings(upstream=UP, database={"backend": "sqlite3"})
    assert center.index_backend == "sqlite3"  # a proxy-only center may choose it too


def test_the_sqlite3_index_refuses_what_it_does_not_implement() -> None:
    message = refused(role="node", upstream=UP, auth={"enabled": True},
                      database={"backend": "sqlite3"})
    assert message.startswith("database.backend sqlite3 serves a pull-through cache only"), \
        message
    assert "auth, audit" in message, message


def test_an_unknown_role_is_refused() -> None:
    assert refused(role="hub").startswith("--role 'hub': input should be 'center', 'edge'")


def test_hot_tier_settings_and_their_mistakes(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    config = write(tmp_path, f"storage:\n  hot:\n    path: {tmp_path / 'hot'}\n"
                             "    max_bytes: 1000\n    promote_after: 3\n")
    hot = load_settings(config).storage.hot
    assert (hot.path, hot.max_bytes, hot.promote_after) == (tmp_path / "hot", 1000, 3)
    assert (hot.high_bytes, hot.low_bytes) == (900, 700)
    assert load_settings().storage.hot.path is None  # off unless a path is given
    monkeypatch.setenv("STABLEMIRROR_STORAGE__HOT__LOW_WATERMARK", "0.95")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert str(e.value) == ("STABLEMIRROR_STORAGE__HOT__LOW_WATERMARK '0.95': must be below "
                            "high_watermark (0.9)")
    monkeypatch.delenv("STABLEMIRROR_STORAGE__HOT__LOW_WATERMARK")
    monkeypatch.setenv("STABLEMIRROR_STORAGE__HOT__PROMOTE_AFTER", "0")
    with pytest.raises(SettingsError, match="PROMOTE_AFTER '0': must be at least 1"):
        load_settings()
def test_storage_section_from_yaml_and_environment(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    config = write(tmp_path, "storage:\n  backend: s3\n  s3:\n    bucket: from-file\n"
                             "    endpoint: http://127.0.0.1:8333\n    access_key: AKIDFILE\n"
                             "    secret_key: very-secret-file-value\n    prefix: reg/\n")
    s = load_settings(config)
    assert s.storage.backend == "s3"
    assert (s.storage.s3.bucket, s.storage.s3.prefix) == ("from-file", "reg/")
    assert s.storage.s3.secret_key is not None
    assert s.storage.s3.secret_key.get_secret_value() == "very-secret-file-value"
    assert "very-secret-file-value" not in repr(s) + str(s.model_dump())
    monkeypatch.setenv("STABLEMIRROR_STORAGE__S3__BUCKET", "from-env")
    monkeypatch.setenv("STABLEMIRROR_STORAGE__S3__CREATE_BUCKET", "true")
    s = load_settings(config)
    assert s.storage.s3.bucket == "from-env" and s.storage.s3.create_bucket
    assert load_settings().storage.backend == "filesystem"


def test_storage_mistakes_name_the_setting_not_the_secret(tmp_path: Path) -> None:
    half = write(tmp_path, "storage:\n  backend: s3\n  s3:\n    bucket: b\n"
                           "    secret_key: very-secret-file-value\n")
    with pytest.raises(SettingsError) as info:
        load_settings(half)
    assert "give both or neither" in str(info.value)
    assert "very-secret-file-value" not in str(info.value)
    with pytest.raises(SettingsError, match=r"storage\.s3\.bucket is not set"):
        load_settings(write(tmp_path, "storage:\n  backend: s3\n"))
    with pytest.raises(SettingsError, match=r"storage\.s3\.unknown"):
        load_settings(write(tmp_path, "storage:\n  s3:\n    unknown: 1\n"))
