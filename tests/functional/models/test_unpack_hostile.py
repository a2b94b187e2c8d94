"""`unpack` of artifacts someone else made: path tricks refused, legacy and KitOps read."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.functional.models.conftest import LogCursor, cli, push_blob, put_manifest, tree
from tests.support.live import LiveServer

OCI = "application/vnd.oci.image.manifest.v1+json"


def model_manifest(server: LiveServer, repo: str, layers: list[dict[str, object]], *,
                   artifact_type: str = "application/vnd.cncf.model.manifest.v1+json",
                   config_type: str = "application/vnd.cncf.model.config.v1+json") -> bytes:
    config = push_blob(server, repo, b"{}")
    return json.dumps({"schemaVersion": 2, "mediaType": OCI, "artifactType": artifact_type,
                       "config": {"mediaType": config_type, "digest": config, "size": 2},
                       "layers": layers}).encode()


def raw_layer(server: LiveServer, repo: str, path: str, data: bytes,
              key: str = "org.cncf.model.filepath",
              media_type: str = "application/vnd.cncf.model.weight.v1.raw",
              ) -> dict[str, object]:
    return {"mediaType": media_type, "digest": push_blob(server, repo, data),
            "size": len(data), "annotations": {key: path}}


@pytest.mark.parametrize("path", ["../escaped", "/tmp/absolute-escape", "a/../../escaped",
                                  "a\\..\\..\\escaped", "ok/../../escaped"])
def test_path_tricks_in_annotations_are_refused(model_server: LiveServer, tmp_path: Path,
                                                path: str) -> None:
    repo = "hostile/paths"
    layers = [raw_layer(model_server, repo, "fine.json", b"{}"),
              raw_layer(model_server, repo, path, b"evil")]
    put_manifest(model_server, repo, "t", model_manifest(model_server, repo, layers))
    out = tmp_path / "deep" / "out"
    cursor = LogCursor(model_server)
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(out), "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.rglob("*escape*")) == [] and not Path("/tmp/absolute-escape").exists()
    assert cursor.lines(r"GET /v2/hostile/paths/blobs/") == []  # refused before any fetch


def test_a_path_named_twice_is_refused(model_server: LiveServer, tmp_path: Path) -> None:
    repo = "hostile/twice"
    layers = [raw_layer(model_server, repo, "a.bin", b"one"),
              raw_layer(model_server, repo, "./a.bin", b"two")]
    put_manifest(model_server, repo, "t", model_manifest(model_server, repo, layers))
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(tmp_path / "o"),
                 "--no-progress")
    assert result.returncode == 1 and "named twice" in result.stderr


def test_a_symlink_in_the_target_is_not_followed(model_server: LiveServer,
                                                 tmp_path: Path) -> None:
    repo = "hostile/symlink"
    layers = [raw_layer(model_server, repo, "sub/weights.bin", b"payload")]
    put_manifest(model_server, repo, "t", model_manifest(model_server, repo, layers))
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").symlink_to(outside)
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(out), "--no-progress")
    assert result.returncode == 1 and "sub" in result.stderr, result.stderr
    assert list(outside.iterdir()) == []


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(buf.getvalue(), mtime=0) if gz else buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_a_kitops_modelkit_is_unpacked(model_server: LiveServer, tmp_path: Path) -> None:
    repo = "kit/demo"
    model = _tar([_file("model.gguf", b"GGUF-ish bytes")])
    src_dir = tarfile.TarInfo("./src")
    src_dir.type = tarfile.DIRTYPE
    code = _tar([(src_dir, None), _file("./src/train.py", b"print(1)\n")])
    layers = [{"mediaType": "application/vnd.kitops.modelkit.model.v1.tar+gzip",
               "digest": push_blob(model_server, repo, model), "size": len(model)},
              {"mediaType": "application/vnd.kitops.modelkit.code.v1.tar+gzip",
               "digest": push_blob(model_server, repo, code), "size": len(code)}]
    kitfile = json.dumps({"manifestVersion": "1.0.0", "package": {"name": "demo"}}).encode()
    config = push_blob(model_server, repo, kitfile)
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI, "config": {
        "mediaType": "application/vnd.kitops.modelkit.config.v1+json", "digest": config,
        "size": len(kitfile)}, "layers": layers}).encode()
    put_manifest(model_server, repo, "v1", body)
    out = tmp_path / "out"
    result = cli("unpack", f"{model_server.host}/{repo}:v1", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert sorted(tree(out)) == ["model.gguf", "src/train.py"]
    assert (out / "src/train.py").read_bytes() == b"print(1)\n"


@pytest.mark.parametrize("member", ["symlink", "hardlink", "dotdot", "absolute"])
def test_tricks_inside_a_tar_layer_are_refused(model_server: LiveServer, tmp_path: Path,
                                               member: str) -> None:
    repo = f"kit/{member}"
    info = tarfile.TarInfo("evil")
    data: bytes | None = None
    if member == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    elif member == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
    else:
        info, data = _file("../escaped" if member == "dotdot" else "/tmp/abs-escaped", b"x")
    blob = _tar([_file("ok.txt", b"ok"), (info, data)])
    layers = [{"mediaType": "application/vnd.cncf.model.weight.v1.tar+gzip",
               "digest": push_blob(model_server, repo, blob), "size": len(blob),
               "annotations": {"org.cncf.model.filepath": "bundle"}}]
    put_manifest(model_server, repo, "t", model_manifest(model_server, repo, layers))
    out = tmp_path / "out"
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(out), "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    says = {"symlink": "not a regular file", "hardlink": "not a regular file",
            "dotdot": "'..' component", "absolute": "absolute path"}[member]
    assert says in result.stderr, result.stderr
    assert not (out / "evil").exists() and not (out / "evil").is_symlink()
    assert list(tmp_path.rglob("*escaped*")) == []
    assert not Path("/tmp/abs-escaped").exists()


def test_a_legacy_cnai_artifact_is_unpacked(model_server: LiveServer, tmp_path: Path) -> None:
    repo = "legacy/cnai"
    layers = [raw_layer(model_server, repo, "w.safetensors", b"weights",
                        key="org.cnai.model.filepath",
                        media_type="application/vnd.cnai.model.weight.v1.raw"),
              raw_layer(model_server, repo, "docs/README.md", b"# hi",
                        key="org.cnai.model.filepath",
                        media_type="application/vnd.cnai.model.doc.v1.raw")]
    put_manifest(model_server, repo, "t", model_manifest(
        model_server, repo, layers,
        artifact_type="application/vnd.cnai.model.manifest.v1+json",
        config_type="application/vnd.cnai.model.config.v1+json"))
    out = tmp_path / "out"
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert (out / "w.safetensors").read_bytes() == b"weights"
    assert (out / "docs/README.md").read_bytes() == b"# hi"


@pytest.mark.parametrize("clash", ["with a raw layer", "inside the tar"])
def test_a_tar_member_may_not_take_a_path_twice(model_server: LiveServer, tmp_path: Path,
                                                clash: str) -> None:
    repo = "kit/clash"
    members = [_file("w.bin", b"from the tar")]
    if clash == "inside the tar":
        members.append(_file("./w.bin", b"again"))
    blob = _tar(members)
    layers = [{"mediaType": "application/vnd.cncf.model.weight.v1.tar+gzip",
               "digest": push_blob(model_server, repo, blob), "size": len(blob),
               "annotations": {"org.cncf.model.filepath": "bundle"}}]
    if clash == "with a raw layer":
        layers.append(raw_layer(model_server, repo, "w.bin", b"raw"))
    put_manifest(model_server, repo, "t", model_manifest(model_server, repo, layers))
    result = cli("unpack", f"{model_server.host}/{repo}:t", str(tmp_path / "o"),
                 "--no-progress")
    assert result.returncode == 1 and "named twice" in result.stderr, result.stderr
