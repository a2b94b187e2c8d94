"""Trust policies on a mirror (edge): signatures travel through from the center, and an
image whose signatures an upstream stripped, or whose tag it swapped, is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.functional.trust.test_trust import wait_status
from tests.support.live import LiveServer
from tests.support.trust_support import cli, error, generate_keys, get_manifest, push_image


def edge_config(path: Path, center: str, dev_pub: Path, **extra: object) -> Path:
    path.write_text(json.dumps({
        "mirror": {
            "upstream_groups": {"center": {"upstreams": [{"url": center}],
                                           "health_check_interval": 0}},
            "namespaces": [{"prefix": "cache/", "mode": "proxy", "upstream_group": "center",
                            "strip_prefix": False, "tag_ttl": 0}]},
        "trust": {"policies": [{"pattern": "cache/*", "mode": "enforce",
                                "require": {"developer": [str(dev_pub)]}}]},
        **extra}))
    return path


def test_edge_enforces_on_mirrored_content(server_factory: Callable[..., LiveServer],
                                           tmp_path: Path) -> None:
    keys = generate_keys(tmp_path, "dev")
    center = server_factory()
    signed = push_image(center.url, "cache/signed")
    push_image(center.url, "cache/stripped")
    cli("sign", "--key", f"{keys['dev']}.key", f"{center.host}/cache/signed:v1")
    edge = server_factory("--config", str(edge_config(tmp_path / "edge.yml", center.url,
                                                      keys["dev"].with_suffix(".pub"))))
    # The center has no policy; the edge pulls the signature through and checks it.
    r = get_manifest(edge.url, "cache/signed", "v1")
    assert r.status_code == 200, r.text
    assert r.content == signed.manifest
    r = get_manifest(edge.url, "cache/stripped", "v1")
    assert r.status_code == 403
    assert error(r)["detail"]["missing_roles"] == ["developer"]  # type: ignore[index]
    # The center swaps the tag to an unsigned image: the edge refuses it.
    swapped = push_image(center.url, "cache/signed", "v1")
    r = wait_status(edge.url, "cache/signed", "v1", 403)
    assert error(r)["detail"]["digest"] == swapped.digest  # type: ignore[index]
    assert get_manifest(edge.url, "cache/signed", signed.digest).status_code == 200
    # `verify` against the edge sees the signature the center holds.
    out = cli("verify", "--key", f"developer={keys['dev']}.pub",
              f"{edge.host}/cache/signed@{signed.digest}").stdout
    assert "signed by developer" in out
