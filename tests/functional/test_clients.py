"""Real OCI clients against a real registry process on loopback.

skopeo, podman and buildah run as subprocesses with a private configuration (see
tests/clients.py); oras is the oras-py SDK. Images are built offline from random data.

By default every test gets a fresh stablemirror server (the `server` fixture). With
STABLEMIRROR_TEST_REFERENCE=1 the same tests target Debian's docker-registry instead, which
is how the tests themselves were validated (it lacks the OCI 1.1 referrers API, so the
referrers test is expected to fail there).

    .venv/bin/pytest tests/functional/test_clients.py -m clients
    STABLEMIRROR_TEST_REFERENCE=1 .venv/bin/pytest tests/functional/test_clients.py
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import oras.oci
import pytest
import requests

from tests.support.clients import (
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    ArtifactRegistry,
    BuiltImage,
    Clients,
    KiB,
    MiB,
    OciLayout,
    RegistryProcess,
    file_digest,
    http_get,
    layer_file_digests,
    layout_ref_descriptor,
    registry_fixture,
    sha256_digest,
    verify_layout_blobs,
)

pytestmark = pytest.mark.clients


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryProcess]:
    """A fresh registry per test: stablemirror's `server`, or docker-registry (reference).

    Indirect parametrization with an int runs stablemirror with that many workers, so
    upload sessions and manifests must be visible across processes."""
    workers = getattr(request, "param", None)
    yield from registry_fixture(request, tmp_path, "server", workers=workers)


@pytest.fixture
def clients(registry: RegistryProcess, tmp_path: Path) -> Iterator[Clients]:
    c = Clients(tmp_path / "clients", registry)
    yield c
    c.close()


def assert_layout_has_image(clients: Clients, root: Path, tag: str, img: BuiltImage,
                            source: OciLayout) -> None:
    """A layout written by skopeo holds `img` with every blob byte-identical to the source."""
    desc = layout_ref_descriptor(root, tag)
    assert desc["digest"] == img.manifest.digest, clients.fail(
        f"pulled manifest {desc['digest']}, pushed {img.manifest.digest}")
    blobs = verify_layout_blobs(root)
    for d in (img.manifest, *img.blobs):
        assert d.digest in blobs, clients.fail(f"{d.digest} missing from pulled layout {root}")
        pulled = (root / "blobs" / "sha256" / d.hex).read_bytes()
        original = source.blob_path(d.digest).read_bytes()
        assert pulled == original, clients.fail(f"blob {d.digest} differs after round trip")


# --------------------------------------------------------------------------- 1. skopeo


@pytest.mark.parametrize("registry", [None, 3], indirect=True, ids=["1worker", "3workers"])
def test_skopeo_copy_inspect_list_tags_pull_delete(clients: Clients, tmp_path: Path) -> None:
    src = OciLayout(tmp_path / "src")
    img = src.add_image([300 * KiB, 2 * MiB, 17 * KiB])
    src.tag("v1", img.manifest)
    repo = "skopeo/roundtrip"

    digestfile = tmp_path / "pushed.digest"
    clients.skopeo("copy", "--dest-tls-verify=false", "--digestfile", str(digestfile),
                   src.ref("v1"), clients.docker_ref(repo, "v1"))
    assert digestfile.read_text().strip() == img.manifest.digest
    # Second tag of the same image: blobs already exist, manifest PUT again.
    clients.skopeo("copy", "--dest-tls-verify=false", src.ref("v1"),
                   clients.docker_ref(repo, "v2"))

    info = clients.skopeo_json("inspect", "--tls-verify=false", clients.docker_ref(repo, "v1"))
    assert info["Digest"] == img.manifest.digest, clients.fail(f"inspect: {info}")
    assert info["Layers"] == [layer.digest for layer in img.layers], clients.fail(str(info))
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert sorted(info["RepoTags"]) == ["v1", "v2"], clients.fail(str(info))

    raw = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                         clients.docker_ref(repo, "v1")).stdout
    assert raw.encode() == img.manifest_bytes, clients.fail("manifest bytes changed on the way")
    raw_config = clients.skopeo("inspect", "--tls-verify=false", "--raw", "--config",
                                clients.docker_ref(repo, "v1")).stdout
    assert raw_config.encode() == img.config_bytes, clients.fail("config bytes changed")
    by_digest = clients.skopeo_json("inspect", "--tls-verify=false",
                                    clients.docker_ref(repo, img.manifest.digest))
    assert by_digest["Digest"] == img.manifest.digest

    tags = clients.skopeo_json("list-tags", "--tls-verify=false",
                               f"docker://{clients.registry.host}/{repo}")
    assert sorted(tags["Tags"]) == ["v1", "v2"], clients.fail(f"list-tags: {tags}")

    dst = tmp_path / "dst"
    clients.skopeo("copy", "--src-tls-verify=false", clients.docker_ref(repo, "v1"),
                   f"oci:{dst}:pulled")
    assert_layout_has_image(clients, dst, "pulled", img, src)

    clients.skopeo("delete", "--tls-verify=false", clients.docker_ref(repo, "v1"))
    for ref in ("v1", img.manifest.digest):
        gone = clients.skopeo("inspect", "--tls-verify=false", clients.docker_ref(repo, ref),
                              check=False)
        assert gone.returncode != 0, clients.fail(f"{ref} still inspectable after delete")
        assert "manifest unknown" in gone.stderr.lower(), clients.fail(
            f"inspect {ref} after delete: expected MANIFEST_UNKNOWN, got {gone.stderr}")


# --------------------------------------------------------------------------- 2. podman


def test_podman_push_rmi_pull(clients: Clients, tmp_path: Path) -> None:
    src = OciLayout(tmp_path / "src")
    img = src.add_image([512 * KiB, 3 * MiB])
    src.tag("v1", img.manifest)
    name = clients.image_name("podman/app", "v1")

    clients.podman("pull", src.ref("v1"))
    clients.podman("tag", img.config.hex, name)
    digestfile = tmp_path / "pushed.digest"
    # No --tls-verify flag: the private registries.conf marks the registry insecure.
    clients.podman("push", "--digestfile", str(digestfile), name)
    pushed = digestfile.read_text().strip()
    assert pushed.startswith("sha256:"), pushed

    clients.podman("rmi", "-f", img.config.hex)
    left = clients.podman("images", "-a", "-q").stdout.split()
    assert left == [], f"images left after rmi: {left}"

    clients.podman("pull", name)
    info = clients.podman_inspect(name)
    assert info["Id"] == img.config.hex, clients.fail(f"image id {info['Id']}")
    assert info["Digest"] == pushed, clients.fail(f"pulled digest {info['Digest']} != {pushed}")
    assert f"{clients.registry.host}/podman/app@{pushed}" in info["RepoDigests"]
    assert info["RootFS"]["Layers"] == img.diff_ids, clients.fail(str(info["RootFS"]))
    remote = clients.skopeo_json("inspect", "--tls-verify=false",
                                 clients.docker_ref("podman/app", "v1"))
    assert remote["Digest"] == pushed

    # The unpacked files are the random content that was built.
    mount = Path(clients.podman("image", "mount", name).stdout.strip())
    try:
        for path, digest in img.files.items():
            assert file_digest(mount / path.lstrip("/")) == digest, f"{path} content differs"
    finally:
        clients.podman("image", "unmount", name)


# --------------------------------------------------------------------------- 3. buildah


def test_buildah_push_docker_v2s2(clients: Clients, tmp_path: Path) -> None:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(os.urandom(700 * KiB))
    ctr = clients.buildah("from", "scratch").stdout.strip()
    clients.buildah("copy", ctr, str(payload), "/payload/payload.bin")
    clients.buildah("config", "--label", "org.stablemirror.test=v2s2", ctr)
    clients.buildah("commit", "--format", "docker", ctr, "localhost/v2s2-test:latest")
    digestfile = tmp_path / "pushed.digest"
    clients.buildah("push", "--format", "v2s2", "--digestfile", str(digestfile),
                    "localhost/v2s2-test:latest", clients.docker_ref("buildah/v2s2", "v1"))
    pushed = digestfile.read_text().strip()

    raw = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                         clients.docker_ref("buildah/v2s2", "v1")).stdout
    assert sha256_digest(raw.encode()) == pushed, clients.fail("served bytes differ from pushed")
    manifest = json.loads(raw)
    assert manifest["mediaType"] == MT_DOCKER_MANIFEST, clients.fail(raw)
    assert manifest["config"]["mediaType"] == MT_DOCKER_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [MT_DOCKER_LAYER_GZIP]

    # The registry serves it back with the Docker media type and digest headers.
    url = f"{clients.registry.url}/v2/buildah/v2s2/manifests/v1"
    resp = http_get(url, accept=f"{MT_DOCKER_MANIFEST}, {MT_OCI_MANIFEST}")
    assert resp.status_code == 200, clients.fail(f"GET {url}: {resp.status_code} {resp.text}")
    assert resp.headers["Content-Type"].split(";")[0] == MT_DOCKER_MANIFEST
    assert resp.headers.get("Docker-Content-Digest") == pushed
    assert resp.content == raw.encode()

    out = tmp_path / "pulled-dir"
    clients.skopeo("copy", "--src-tls-verify=false", clients.docker_ref("buildah/v2s2", "v1"),
                   f"dir:{out}")
    layer_blob = out / manifest["layers"][0]["digest"].split(":", 1)[1]
    files = layer_file_digests(layer_blob)
    assert files.get("/payload/payload.bin") == file_digest(payload), files


# --------------------------------------------------------------------------- 4. oras


MODEL_TYPE = "application/vnd.cncf.model.manifest.v1+json"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIG_TYPE = "application/vnd.example.signature.v1+json"


def test_oras_artifacts_subject_and_referrers(registry: RegistryProcess,
                                              clients: Clients, tmp_path: Path) -> None:
    host, repo = registry.host, "oras/model"
    workdir = tmp_path / "artifact"
    workdir.mkdir()
    weights = workdir / "weights.bin"
    weights.write_bytes(os.urandom(600 * KiB))
    card = workdir / "README.md"
    card.write_text("# test model\n" + os.urandom(8).hex() + "\n")

    model = ArtifactRegistry(host, artifact_type=MODEL_TYPE)
    resp = model.push(target=f"{host}/{repo}:v1", files=[str(weights), str(card)],
                      disable_path_validation=True, quiet=True)
    assert resp.status_code == 201, clients.fail(f"model push: {resp.status_code} {resp.text}")

    got = http_get(f"{registry.url}/v2/{repo}/manifests/v1", accept=MT_OCI_MANIFEST)
    assert got.status_code == 200, clients.fail(f"GET manifest: {got.status_code} {got.text}")
    subject_bytes = got.content
    subject_digest = sha256_digest(subject_bytes)
    assert got.headers.get("Docker-Content-Digest", subject_digest) == subject_digest
    assert json.loads(subject_bytes)["artifactType"] == MODEL_TYPE
    subject = oras.oci.Subject(mediaType=MT_OCI_MANIFEST, digest=subject_digest,
                               size=len(subject_bytes))

    referrers: dict[str, str] = {}  # artifactType -> manifest digest
    for artifact_type, tag in ((SBOM_TYPE, "sbom"), (SIG_TYPE, "sig")):
        f = workdir / f"{tag}.json"
        f.write_text(json.dumps({"kind": tag, "nonce": os.urandom(8).hex()}))
        client = ArtifactRegistry(host, artifact_type=artifact_type)
        resp = client.push(target=f"{host}/{repo}:{tag}", files=[str(f)], subject=subject,
                           manifest_annotations={"org.example.kind": tag},
                           disable_path_validation=True, quiet=True)
        assert resp.status_code == 201, clients.fail(f"{tag} push: {resp.status_code}")
        assert resp.headers.get("OCI-Subject") == subject_digest, clients.fail(
            f"PUT of a manifest with a subject must answer OCI-Subject: {subject_digest}; "
            f"headers were {dict(resp.headers)}")
        m = http_get(f"{registry.url}/v2/{repo}/manifests/{tag}", accept=MT_OCI_MANIFEST)
        assert json.loads(m.content)["subject"]["digest"] == subject_digest
        referrers[artifact_type] = sha256_digest(m.content)

    url = f"{registry.url}/v2/{repo}/referrers/{subject_digest}"
    resp = http_get(url)
    assert resp.status_code == 200, clients.fail(f"GET {url}: {resp.status_code} {resp.text}")
    assert resp.headers["Content-Type"].split(";")[0] == MT_OCI_INDEX
    index = resp.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == MT_OCI_INDEX, index
    found = {d["digest"]: d for d in index["manifests"]}
    assert set(found) == set(referrers.values()), clients.fail(f"referrers: {index}")
    for artifact_type, digest in referrers.items():
        d = found[digest]
        assert d["artifactType"] == artifact_type, d
        assert d["mediaType"] == MT_OCI_MANIFEST, d
        assert d.get("annotations", {}).get("org.example.kind") in ("sbom", "sig"), d

    resp = http_get(url, artifactType=SBOM_TYPE)
    assert resp.status_code == 200, clients.fail(f"filtered referrers: {resp.status_code}")
    assert resp.headers.get("OCI-Filters-Applied") == "artifactType", dict(resp.headers)
    assert [d["digest"] for d in resp.json()["manifests"]] == [referrers[SBOM_TYPE]]

    # Unknown subject: 200 with an empty list, never 404.
    unknown = "sha256:" + "0" * 64
    resp = http_get(f"{registry.url}/v2/{repo}/referrers/{unknown}")
    assert resp.status_code == 200 and resp.json()["manifests"] == [], clients.fail(
        f"referrers of unknown digest: {resp.status_code} {resp.text}")

    # oras pulls the model back, by tag and by digest, with identical files.
    for ref in ("v1", f"@{subject_digest}"):
        out = tmp_path / f"pull-{ref.strip('@').replace(':', '-')}"
        target = f"{host}/{repo}:{ref}" if not ref.startswith("@") else f"{host}/{repo}{ref}"
        files = ArtifactRegistry(host).pull(target=target, outdir=str(out))
        assert sorted(Path(p).name for p in files) == ["README.md", "weights.bin"], files
        assert (out / "weights.bin").read_bytes() == weights.read_bytes()
        assert (out / "README.md").read_bytes() == card.read_bytes()


def test_oras_chunked_upload(registry: RegistryProcess, clients: Clients,
                             tmp_path: Path) -> None:
    """oras-py's chunked upload path (POST, PATCH x N with Content-Range, PUT)."""
    blob = tmp_path / "big.bin"
    blob.write_bytes(os.urandom(11 * MiB + 123))
    client = ArtifactRegistry(registry.host, artifact_type=MODEL_TYPE)
    resp = client.push(target=f"{registry.host}/oras/chunked:v1", files=[str(blob)],
                       disable_path_validation=True, do_chunked=True, chunk_size=4 * MiB,
                       quiet=True)
    assert resp.status_code == 201, clients.fail(f"chunked push: {resp.status_code}")
    out = tmp_path / "out"
    ArtifactRegistry(registry.host).pull(target=f"{registry.host}/oras/chunked:v1",
                                         outdir=str(out))
    assert file_digest(out / "big.bin") == file_digest(blob)


# --------------------------------------------------------------------------- 5. multi-arch


@pytest.mark.parametrize("registry", [None, 3], indirect=True, ids=["1worker", "3workers"])
def test_multiarch_index_copy_all_and_arch_selection(clients: Clients, tmp_path: Path) -> None:
    src = OciLayout(tmp_path / "src")
    amd = src.add_image([400 * KiB, 90 * KiB], arch="amd64")
    arm = src.add_image([350 * KiB, 120 * KiB], arch="arm64")
    idx = src.add_index([amd, arm])
    src.tag("multi", idx.index)
    repo = "multi/app"

    digestfile = tmp_path / "pushed.digest"
    clients.skopeo("copy", "--all", "--dest-tls-verify=false", "--digestfile", str(digestfile),
                   src.ref("multi"), clients.docker_ref(repo, "v1"))
    assert digestfile.read_text().strip() == idx.index.digest

    raw = clients.skopeo("inspect", "--tls-verify=false", "--raw",
                         clients.docker_ref(repo, "v1")).stdout
    assert raw.encode() == idx.index_bytes, clients.fail(f"index changed: {raw}")
    assert json.loads(raw)["mediaType"] == MT_OCI_INDEX

    for arch, img in idx.images.items():
        dst = tmp_path / f"pulled-{arch}"
        clients.skopeo("--override-arch", arch, "copy", "--src-tls-verify=false",
                       clients.docker_ref(repo, "v1"), f"oci:{dst}:{arch}")
        assert_layout_has_image(clients, dst, arch, img, src)
        config = json.loads((dst / "blobs" / "sha256" / img.config.hex).read_text())
        assert config["architecture"] == arch

    clients.podman("pull", "--arch", "arm64", clients.image_name(repo, "v1"))
    info = clients.podman_inspect(clients.image_name(repo, "v1"))
    assert info["Architecture"] == "arm64", clients.fail(f"podman pulled {info['Architecture']}")
    assert info["Id"] == arm.config.hex, clients.fail(f"podman image id {info['Id']}")
    assert info["RootFS"]["Layers"] == arm.diff_ids


# --------------------------------------------------------------------------- 6. large


@pytest.mark.slow
def test_large_image_roundtrip(clients: Clients, tmp_path: Path) -> None:
    """~300 MiB in three layers (stored-deflate gzip: random data does not compress)."""
    src = OciLayout(tmp_path / "src")
    img = src.add_image([120 * MiB, 100 * MiB, 80 * MiB], compresslevel=0)
    src.tag("big", img.manifest)
    assert sum(layer.size for layer in img.layers) > 300 * MiB
    repo = "large/model"

    clients.skopeo("copy", "--dest-tls-verify=false", src.ref("big"),
                   clients.docker_ref(repo, "v1"), timeout=900)
    info = clients.skopeo_json("inspect", "--tls-verify=false", clients.docker_ref(repo, "v1"))
    assert info["Digest"] == img.manifest.digest
    assert info["Layers"] == [layer.digest for layer in img.layers]

    for layer in img.layers:
        head = clients.registry.url + f"/v2/{repo}/blobs/{layer.digest}"
        resp = requests.head(head, timeout=30)
        assert resp.status_code == 200, clients.fail(f"HEAD {head}: {resp.status_code}")
        assert int(resp.headers["Content-Length"]) == layer.size

    dst = tmp_path / "dst"
    clients.skopeo("copy", "--src-tls-verify=false", clients.docker_ref(repo, "v1"),
                   f"oci:{dst}:big", timeout=900)
    desc = layout_ref_descriptor(dst, "big")
    assert desc["digest"] == img.manifest.digest
    blobs = verify_layout_blobs(dst)  # every pulled blob hashes to its digest
    for d in img.blobs:
        assert blobs.get(d.digest) == d.size, clients.fail(f"{d.digest}: {blobs.get(d.digest)}")
