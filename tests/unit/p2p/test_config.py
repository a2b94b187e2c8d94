from __future__ import annotations

from pathlib import Path

import pytest

from stablemirror.config import SettingsError, load_settings


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yml"
    path.write_text(text)
    return path


def test_node_p2p_needs_the_cluster_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"p2p\.secret"):
        load_settings(None, role="node", upstream=["http://127.0.0.1:1"],
                      p2p={"enabled": True})


def test_node_p2p_runs_one_worker(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--workers must be 1"):
        load_settings(_yaml(tmp_path, "p2p: {secret: s}\n"), role="node", workers=2,
                      upstream=["http://127.0.0.1:1"], p2p={"enabled": True})
    s = load_settings(_yaml(tmp_path, "p2p: {secret: s, cluster: east}\n"), role="node",
                      upstream=["http://127.0.0.1:1"], p2p={"enabled": True})
    assert s.p2p.enabled and s.p2p.cluster == "east" and s.worker_count == 1


def test_piece_bounds_are_powers_of_two(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="power of two"):
        load_settings(_yaml(tmp_path, "p2p: {min_piece_bytes: 300000}\n"))
