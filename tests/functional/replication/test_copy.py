"""`stablemirror copy` between real registries on loopback (stablemirror and Debian's
docker-registry, both directions), checked byte for byte and with skopeo; a transfer cut
in the middle of a blob (source cut mid-range, destination connection reset mid-upload)
resumes from the destination's offset; `replicate run` in-process into a docker-registry."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from stablemirror.client.registry import RegistryClient
from stablemirror.oci.digest import Digest
from stablemirror.replication.copier import ImageCopier
from stablemirror.replication.endpoint import TransferSettings
from stablemirror.replication.registry_endpoint import RegistryEndpoint
from tests.support.clients import ReferenceRegistry, require_tool
from tests.support.faultproxy import FaultProxy
from tests.support.live import LiveServer
from tests.support.mirror_support import MiB, make_image, push_image
from tests.support.replication_support import (
    assert_image_at,
    blob_bytes,
    manifest_bytes,
    push_index,
    push_referrer,
    push_sig_tag,
)


def copy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "stablemirror", "copy", "--no-progress",
                           *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    return proc


def test_copy_index_with_signature_and_referrer_to_docker_registry(
        hosted: LiveServer, reference: ReferenceRegistry, tmp_path: Path) -> None:
    """An index (two images, one with a 3 MiB layer moved in 1 MiB ranges and chunks), its
    `.sig` tag and an SBOM referrer arrive at a docker-registry with the same digests; a
    second copy finds the tag unchanged by HEAD and uploads nothing."""
    amd = make_image("c/app", None, (3 * MiB + 17, 40_000))
    arm = make_image("c/app", None, (50_000,))
    index, index_digest = push_index(hosted.url, "c/app", "v1", [amd, arm])
    sig, _ = push_sig_tag(hosted.url, "c/app", index_digest)
    sbom = push_referrer(hosted.url, "c/app", amd)

    src, dst = f"docker://{hosted.host}/c/app:v1", f"docker://{reference.host}/d/app:v1"
    out = copy_cli("--all", "--chunk-mib", "1", "--parallel-streams", "3", src, dst)
    assert out.stdout.strip() == index_digest

    assert manifest_bytes(reference.url, "d/app", "v1") == index
    for img in (amd, arm):
        assert_image_at(reference.url, "d/app", img.digest, img)
    assert manifest_bytes(reference.url, "d/app",
                          f"sha256-{index_digest.split(':')[1]}.sig") == sig
    # docker-registry 2.8 has no referrers API: the copy lists the SBOM in the tag fallback.
    fallback = manifest_bytes(reference.url, "d/app", f"sha256-{amd.digest.split(':')[1]}")
    assert fallback is not None and sbom in [m["digest"] for m in
                                             json.loads(fallback)["manifests"]]
    assert manifest_bytes(reference.url, "d/app", sbom) is not None

    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw", dst],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == index
    pulled = tmp_path / "pulled"
    subprocess.run([skopeo, "copy", "--all", "--src-tls-verify=false", dst, f"oci:{pulled}:v1"],
                   capture_output=True, timeout=120, check=True)
    again = copy_cli("--all", src, dst)
    assert again.stdout.strip() == index_digest


def test_copy_from_docker_registry_into_stablemirror_one_platform(
        hosted: LiveServer, reference: ReferenceRegistry) -> None:
    """docker-registry -> stablemirror; without --all an index gives the one manifest of
    the asked platform, unchanged; blobs already in another repository are mounted."""
    amd = make_image("e/app", None, (100_000,))
    arm = make_image("e/app", None, (60_000,))
    push_index(reference.url, "e/app", "v2", [amd, arm])
    out = copy_cli("--platform", "linux/arm64", f"docker://{reference.host}/e/app:v2",
                   f"docker://{hosted.host}/f/app:v2")
    assert out.stdout.strip() == arm.digest
    assert_image_at(hosted.url, "f/app", "v2", arm)


def test_cut_transfer_resumes_from_destination_offset(
        hosted: LiveServer, reference: ReferenceRegistry) -> None:
    """A 6 MiB layer in 1 MiB chunks with 3 ranged streams: the source cuts one range in the
    middle and the destination's connection is reset before the third PATCH. The copy
    resumes from the offset the destination reports, sends at most one chunk more than the
    blob, and the digest is the same."""
    image = make_image("g/big", "v1", (6 * MiB + 5,))
    push_image(reference.url, image)
    layer = image.layers[0]
    chunk = MiB
    with FaultProxy(reference.host, "source") as src_proxy, \
            FaultProxy(hosted.host, "destination") as dst_proxy:
        src_proxy.set("cut", after=300_000, match=f"/blobs/{layer}")

        armed: list[int] = []

        def progress(digest: Digest, done: int, total: int) -> None:
            if str(digest) == layer and done == 2 * chunk and not armed:
                armed.append(done)  # once: the cut happens mid-blob, after two chunks
                dst_proxy.set("reset", match="/blobs/uploads/", methods=("PATCH",), times=1)

        async def run() -> RegistryEndpoint:
            src = RegistryEndpoint(RegistryClient(src_proxy.host))
            dst = RegistryEndpoint(RegistryClient(dst_proxy.host))
            settings = TransferSettings(chunk_size=chunk, parallel_streams=3,
                                        backoff_seconds=0.05)
            try:
                await ImageCopier(src, dst, settings, progress=progress).copy(
                    "g/big", "v1", "h/big")
            finally:
                await src.close()
                await dst.close()
            return dst

        dst = asyncio.run(run())
        cut = [e for e in src_proxy.requests(f"/blobs/{layer}") if e.fault == "cut"]
        reset = [e for e in dst_proxy.requests("/blobs/uploads/") if e.fault == "reset"]
    assert cut and reset, (src_proxy.summary(), dst_proxy.summary())
    upload = next(u for u in dst.uploads if str(u.reader.digest) == layer)
    assert upload.resumes >= 1
    size = len(image.blobs[layer])
    assert size <= upload.sent <= size + chunk, upload.sent
    assert blob_bytes(hosted.url, "h/big", layer) == image.blobs[layer]
    assert manifest_bytes(hosted.url, "h/big", "v1") == image.manifest


def test_copy_to_and_from_an_oci_layout(hosted: LiveServer, tmp_path: Path) -> None:
    """registry -> oci:DIR:TAG -> registry, digests preserved; skopeo reads the layout."""
    image = make_image("l/app", "v3", (200_000,))
    push_image(hosted.url, image)
    layout = tmp_path / "layout"
    copy_cli(f"docker://{hosted.host}/l/app:v3", f"oci:{layout}:v3")
    skopeo = require_tool("skopeo")
    raw = subprocess.run([skopeo, "inspect", "--raw", f"oci:{layout}:v3"],
                         capture_output=True, timeout=60, check=True).stdout
    assert raw == image.manifest
    out = copy_cli(f"oci:{layout}:v3", f"docker://{hosted.host}/l/back:v3")
    assert out.stdout.strip() == image.digest
    assert_image_at(hosted.url, "l/back", "v3", image)
    assert os.path.exists(layout / "blobs" / "sha256" / image.layers[0].split(":")[1])


def replicate_cli(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "stablemirror", *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def test_replicate_run_into_docker_registry(hosted: LiveServer,
                                            reference: ReferenceRegistry,
                                            tmp_path: Path) -> None:
    """`replicate run` in-process on the source's data dir: a push rule into a
    docker-registry (tags filtered by a SemVer range)."""
    wanted = push_image(hosted.url, make_image("to-reg/app", "1.2.0", (40_000,)))
    push_image(hosted.url, make_image("to-reg/app", "0.9.0", (40_000,)))
    config = tmp_path / "push.yaml"
    config.write_text(json.dumps({"listen": hosted.host, "replication": {"rules": [
        {"name": "to-reg", "destination": f"http://{reference.host}",
         "filters": {"repositories": ["to-reg/*"], "tags": "semver:>=1.0.0"}}]}}))
    out = replicate_cli("replicate", "run", "to-reg", "--config", str(config),
                       "--data-dir", str(hosted.data_dir)).stdout
    assert json.loads(out)["copied"][0]["reference"] == "1.2.0", out
    assert_image_at(reference.url, "to-reg/app", "1.2.0", wanted)
    assert manifest_bytes(reference.url, "to-reg/app", "0.9.0") is None
