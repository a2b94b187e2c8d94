"""pack attaches chunk indexes; `unpack --from OLD_DIR` fetches only what changed.

The real server, the real CLI: v1 and v2 of a synthetic safetensors model (10% of the
tensors changed) are packed; pack's referrer must be the only chunk-index referrer of the
manifest (the server's own indexer arrives at the same digest); unpacking v2 from v1's
files must write v2's files exactly while the server sends a fraction of the blob bytes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests

from stablemirror.delta.referrer import ARTIFACT_TYPE
from tests.functional.models.conftest import LogCursor, cli, digest_line, tree
from tests.support.live import LiveServer
from tests.support.safetensors_models import Model, make_model, with_changed

MiB = 1 << 20


def write_model(root: Path, model: Model) -> Path:
    root.mkdir(parents=True)
    for i, data in enumerate(model.files):
        (root / f"model-{i:05d}-of-{len(model.files):05d}.safetensors").write_bytes(data)
    (root / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return root


def blob_bytes_sent(lines: list[str]) -> int:
    return sum(int(m.group(1)) for line in lines
               if (m := re.search(r" bytes=(\d+) ", line)))


def chunk_referrers(server: LiveServer, repo: str, digest: str) -> list[dict[str, object]]:
    r = requests.get(f"{server.url}/v2/{repo}/referrers/{digest}", timeout=30)
    assert r.status_code == 200, r.text
    return [m for m in r.json()["manifests"] if m.get("artifactType") == ARTIFACT_TYPE]


def test_pack_attaches_one_referrer_and_unpack_from_fetches_the_changes(
        model_server: LiveServer, tmp_path: Path) -> None:
    v1 = make_model(seed=7, shards=4, tensors_per_shard=5, tensor_bytes=MiB)
    v2 = with_changed(v1, 0.10, seed=8)
    host = model_server.host
    v1_dir, v2_dir = write_model(tmp_path / "v1", v1), write_model(tmp_path / "v2", v2)
    d1 = digest_line(cli("pack", str(v1_dir), f"{host}/delta/llm:v1", "--insecure",
                         "--no-progress"))
    d2 = digest_line(cli("pack", str(v2_dir), f"{host}/delta/llm:v2", "--insecure",
                         "--no-progress"))
    refs = chunk_referrers(model_server, "delta/llm", d2)
    assert len(refs) == 1, refs
    time.sleep(2)  # the server's background indexer had its chance: still one referrer
    assert chunk_referrers(model_server, "delta/llm", d2) == refs
    assert len(chunk_referrers(model_server, "delta/llm", d1)) == 1

    old = tmp_path / "old"
    r = cli("unpack", f"{host}/delta/llm:v1", str(old), "--insecure", "--no-progress")
    assert r.returncode == 0, r.stderr
    cursor = LogCursor(model_server)
    new = tmp_path / "new"
    r = cli("unpack", f"{host}/delta/llm:v2", str(new), "--from", str(old), "--insecure",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert tree(new) == tree(v2_dir)  # exactly v2's files, no leftovers (no cache dir)
    sent = blob_bytes_sent(cursor.lines(r"GET /v2/delta/llm/blobs/sha256:"))
    assert sent < 0.4 * v2.size, (sent, v2.size, v2.changed_bytes)
    assert "bytes reused from" in r.stderr


def test_unpack_from_is_exact_with_or_without_an_index_yet(model_server: LiveServer,
                                                           tmp_path: Path) -> None:
    v1 = make_model(seed=17, shards=2, tensors_per_shard=3, tensor_bytes=MiB)
    v2 = with_changed(v1, 0.2, seed=18)
    host = model_server.host
    v2_dir = write_model(tmp_path / "v2", v2)
    d2 = digest_line(cli("pack", str(v2_dir), f"{host}/plain/llm:v2", "--insecure",
                         "--no-progress", "--no-chunk-index"))
    old = write_model(tmp_path / "old", v1)
    new = tmp_path / "new"
    r = cli("unpack", f"{host}/plain/llm@{d2}", str(new), "--from", str(old), "--insecure",
            "--no-progress")
    assert r.returncode == 0, r.stderr
    assert tree(new) == tree(v2_dir)
