"""Helpers for the real-client functional tests (tests/functional/test_clients.py).

* Offline image building: `OciLayout` writes an OCI image layout (oci-layout, index.json,
  blobs/sha256/...) from random data, so every test pushes content that no registry has
  seen before. Single-arch images and multi-arch indexes are supported.
* Client wrappers: `Clients` runs skopeo, podman and buildah as real processes with a
  private configuration (registries.conf marking the test registry insecure, storage.conf
  with the vfs driver and private graphroot/runroot, containers.conf, auth file, policy),
  never touching the system configuration or the system image store.
* `ArtifactRegistry`: the oras-py SDK client, extended to set `artifactType` on the
  manifests it pushes.
* `ReferenceRegistry`: Debian's reference registry (/usr/bin/docker-registry) with the same
  interface as `tests.support.live.LiveServer`. Setting STABLEMIRROR_TEST_REFERENCE=1 makes the
  client tests target it instead of stablemirror, to validate the tests themselves.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import oras.provider
import pytest
import requests

from tests.support.live import ServerProcess, free_port

REFERENCE_ENV = "STABLEMIRROR_TEST_REFERENCE"

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MiB = 1024 * 1024
KiB = 1024


def use_reference() -> bool:
    """True when the tests should target docker-registry instead of stablemirror."""
    return os.environ.get(REFERENCE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def require_tool(name: str) -> str:
    """Absolute path of a client binary; fail (never skip) the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"required client {name!r} is not on PATH; install it "
                    f"(Debian: apt-get install {name})", pytrace=False)
    return path


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- registries


class RegistryProcess(Protocol):
    """What the client tests need from a registry: LiveServer and ReferenceRegistry."""

    @property
    def host(self) -> str: ...

    @property
    def url(self) -> str: ...

    def log(self) -> str: ...


class ReferenceRegistry(ServerProcess):
    """Debian's docker-registry (distribution 2.8) on a loopback port, LiveServer-alike."""

    BINARY = "docker-registry"
    name = "docker-registry"

    def __init__(self, data_dir: Path) -> None:
        port = free_port()
        super().__init__(data_dir, data_dir.parent / f"reference-{port}.log", port)
        self.config_path = data_dir.parent / f"reference-{self.port}.yml"

    def command(self) -> tuple[list[str], dict[str, str] | None]:
        binary = require_tool(self.BINARY)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML; docker-registry reads it as its configuration file.
        self.config_path.write_text(json.dumps({
            "version": 0.1,
            "log": {"level": "info", "formatter": "text"},
            "storage": {"filesystem": {"rootdirectory": str(self.data_dir)},
                        "delete": {"enabled": True},
                        "maintenance": {"uploadpurging": {"enabled": False}}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }))
        return [binary, "serve", str(self.config_path)], None


def registry_fixture(request: pytest.FixtureRequest, workdir: Path,
                     fixture_name: str = "server",
                     workers: int | None = None) -> Iterator[RegistryProcess]:
    """Yield the stablemirror fixture `fixture_name` (or, with `workers`, a server from
    `server_factory` running that many worker processes); a docker-registry instead when
    STABLEMIRROR_TEST_REFERENCE is set (no stablemirror server is then started)."""
    if use_reference():
        ref = ReferenceRegistry(workdir / "reference-data")
        ref.start()
        try:
            yield ref
        finally:
            ref.stop()
    elif workers is not None:
        yield request.getfixturevalue("server_factory")(workers=workers)
    else:
        yield request.getfixturevalue(fixture_name)


def log_tail(registry: RegistryProcess, chars: int = 6000) -> str:
    try:
        return registry.log()[-chars:]
    except OSError as e:
        return f"<registry log unavailable: {e}>"


# --------------------------------------------------------------------------- OCI layouts


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                             "size": self.size}
        if self.platform:
            d["platform"] = self.platform
        if self.annotations:
            d["annotations"] = self.annotations
        return d

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


@dataclass
class BuiltImage:
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layers: list[Descriptor]
    diff_ids: list[str]
    files: dict[str, str]  # path inside the image -> sha256 digest of its content
    arch: str
    os: str

    @property
    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]


@dataclass
class BuiltIndex:
    index: Descriptor
    index_bytes: bytes
    images: dict[str, BuiltImage] = field(default_factory=dict)  # arch -> image


class _HashingWriter:
    """Forward writes to `out`, hashing and counting them on the way."""

    def __init__(self, out: BinaryIO | _HashingWriter | gzip.GzipFile) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _RandomReader:
    """A file-like source of `size` pseudo-random bytes, hashed as they are read."""

    def __init__(self, size: int, rng: random.Random) -> None:
        self.remaining = size
        self.rng = rng
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.remaining:
            n = self.remaining
        data = self.rng.randbytes(n)
        self.remaining -= n
        self.hash.update(data)
        return data


class OciLayout:
    """An OCI image layout on disk, filled with random-content images."""

    def __init__(self, root: Path, seed: int | None = None) -> None:
        self.root = root
        self.rng = random.Random(secrets.randbits(64) if seed is None else seed)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.refs: list[dict[str, Any]] = []
        self._write_index()

    @property
    def blob_dir(self) -> Path:
        return self.root / "blobs" / "sha256"

    def blob_path(self, digest: str) -> Path:
        algo, hex_ = digest.split(":", 1)
        return self.root / "blobs" / algo / hex_

    def ref(self, tag: str) -> str:
        """skopeo/podman source reference for a tag of this layout."""
        return f"oci:{self.root}:{tag}"

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        d = Descriptor(media_type, sha256_digest(data), len(data))
        self.blob_path(d.digest).write_bytes(data)
        return d

    def add_layer(self, files: dict[str, int], *, compresslevel: int | None = 1,
                  ) -> tuple[Descriptor, str, dict[str, str]]:
        """A layer holding `files` (path -> size) of random content.

        compresslevel None writes an uncompressed tar layer; otherwise tar+gzip with that
        zlib level (0 stores incompressible data quickly but is still a valid gzip stream).
        Returns (descriptor, diff_id, {path: sha256 of content}).
        """
        tmp = self.blob_dir / f".tmp-{secrets.token_hex(8)}"
        contents: dict[str, str] = {}
        with tmp.open("wb") as raw:
            compressed = _HashingWriter(raw)
            gz = (gzip.GzipFile(fileobj=compressed, mode="wb",
                                compresslevel=compresslevel, mtime=0)
                  if compresslevel is not None else None)
            uncompressed = _HashingWriter(gz if gz is not None else compressed)
            with tarfile.open(fileobj=uncompressed, mode="w|",  # type: ignore[call-overload]
                              format=tarfile.PAX_FORMAT) as tar:
                dirs: set[str] = set()
                for path, size in files.items():
                    parts = path.strip("/").split("/")
                    for i in range(1, len(parts)):
                        d = "/".join(parts[:i])
                        if d not in dirs:
                            dirs.add(d)
                            info = tarfile.TarInfo(d)
                            info.type = tarfile.DIRTYPE
                            info.mode = 0o755
                            info.mtime = 1700000000
                            tar.addfile(info)
                    info = tarfile.TarInfo("/".join(parts))
                    info.size = size
                    info.mode = 0o644
                    info.mtime = 1700000000
                    src = _RandomReader(size, self.rng)
                    tar.addfile(info, src)
                    contents["/" + "/".join(parts)] = "sha256:" + src.hash.hexdigest()
            if gz is not None:
                gz.close()
        media_type = MT_OCI_LAYER if compresslevel is None else MT_OCI_LAYER_GZIP
        desc = Descriptor(media_type, compressed.digest, compressed.size)
        tmp.rename(self.blob_path(desc.digest))
        return desc, uncompressed.digest, contents

    def add_image(self, layer_sizes: list[int], *, arch: str = "amd64", os_: str = "linux",
                  compresslevel: int | None = 1,
                  labels: dict[str, str] | None = None) -> BuiltImage:
        """An image with one random file per layer (sizes in bytes) plus a small marker."""
        token = secrets.token_hex(6)
        layers: list[Descriptor] = []
        diff_ids: list[str] = []
        files: dict[str, str] = {}
        for i, size in enumerate(layer_sizes):
            desc, diff_id, contents = self.add_layer(
                {f"data/{arch}-{token}/layer{i}.bin": size,
                 f"data/{arch}-{token}/marker{i}.txt": 64},
                compresslevel=compresslevel)
            layers.append(desc)
            diff_ids.append(diff_id)
            files.update(contents)
        config = {
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch,
            "os": os_,
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/true"],
                       "Labels": {"org.stablemirror.test": token, **(labels or {})}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                        for i in range(len(layer_sizes))],
        }
        config_bytes = canonical_json(config)
        config_desc = self.put_bytes(config_bytes, MT_OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": config_desc.to_json(),
            "layers": [layer.to_json() for layer in layers],
            "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        }
        manifest_bytes = canonical_json(manifest)
        manifest_desc = self.put_bytes(manifest_bytes, MT_OCI_MANIFEST)
        return BuiltImage(manifest=manifest_desc, manifest_bytes=manifest_bytes,
                          config=config_desc, config_bytes=config_bytes, layers=layers,
                          diff_ids=diff_ids, files=files, arch=arch, os=os_)

    def add_index(self, images: list[BuiltImage]) -> BuiltIndex:
        index = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_INDEX,
            "manifests": [
                Descriptor(img.manifest.media_type, img.manifest.digest, img.manifest.size,
                           platform={"architecture": img.arch, "os": img.os}).to_json()
                for img in images
            ],
        }
        index_bytes = canonical_json(index)
        desc = self.put_bytes(index_bytes, MT_OCI_INDEX)
        return BuiltIndex(index=desc, index_bytes=index_bytes,
                          images={img.arch: img for img in images})

    def tag(self, name: str, desc: Descriptor) -> None:
        """Point `name` (org.opencontainers.image.ref.name) at a manifest or index."""
        self.refs = [r for r in self.refs
                     if r.get("annotations", {}).get("org.opencontainers.image.ref.name")
                     != name]
        entry = Descriptor(desc.media_type, desc.digest, desc.size).to_json()
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        self.refs.append(entry)
        self._write_index()

    def _write_index(self) -> None:
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.refs}))


def layout_ref_descriptor(root: Path, tag: str) -> dict[str, Any]:
    """The index.json descriptor of `tag` in an OCI layout written by a client."""
    index = json.loads((root / "index.json").read_text())
    for m in index.get("manifests", []):
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(m)
    raise AssertionError(f"tag {tag!r} not in {root}/index.json: {index}")


def verify_layout_blobs(root: Path) -> dict[str, int]:
    """Check every blob of a layout hashes to its file name; return {digest: size}."""
    found: dict[str, int] = {}
    for algo_dir in (root / "blobs").iterdir():
        for p in algo_dir.iterdir():
            digest = f"{algo_dir.name}:{p.name}"
            actual = file_digest(p)
            assert actual == digest, f"blob {p} has content digest {actual}"
            found[digest] = p.stat().st_size
    return found


def layer_file_digests(blob: Path) -> dict[str, str]:
    """{"/path": sha256 digest} for the regular files of a (possibly gzipped) layer tar."""
    out: dict[str, str] = {}
    with tarfile.open(blob, mode="r:*") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                assert f is not None
                h = hashlib.sha256()
                while chunk := f.read(MiB):
                    h.update(chunk)
                out["/" + member.name.lstrip("./")] = "sha256:" + h.hexdigest()
    return out


# --------------------------------------------------------------------------- CLI clients


class CommandFailed(AssertionError):
    pass


class Clients:
    """skopeo / podman / buildah with a private configuration for one registry.

    Configuration goes through temp files and environment variables only:
    CONTAINERS_REGISTRIES_CONF (the registry marked insecure, no search registries; skopeo
    gets the same file through --registries-conf),
    CONTAINERS_STORAGE_CONF (vfs driver, private graphroot and runroot),
    CONTAINERS_CONF (file events, cgroupfs, private libpod tmp/static dirs),
    REGISTRY_AUTH_FILE (empty), and skopeo's --policy (accept anything).
    """

    def __init__(self, workdir: Path, registry: RegistryProcess) -> None:
        self.registry = registry
        self.workdir = workdir
        conf = workdir / "conf"
        self.graphroot = workdir / "storage" / "graph"
        # podman refuses a runroot longer than 50 characters (conmon socket paths), and
        # pytest's tmp_path is longer than that: run state lives in a short /tmp dir.
        self.short_dir = Path(tempfile.mkdtemp(prefix="sm-", dir="/tmp"))
        self.runroot = self.short_dir / "run"
        self.libpod_tmp = self.short_dir / "libpod"
        self.tmpdir = workdir / "tmp"
        for d in (conf, self.graphroot, self.runroot, self.libpod_tmp, self.tmpdir):
            d.mkdir(parents=True, exist_ok=True)
        registries = conf / "registries.conf"
        registries.write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n\n'
            f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
        storage = conf / "storage.conf"
        storage.write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{self.runroot}"\n'
            f'graphroot = "{self.graphroot}"\n')
        containers = conf / "containers.conf"
        containers.write_text(
            f'[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n'
            f'tmp_dir = "{self.libpod_tmp}"\n'
            f'static_dir = "{self.graphroot / "libpod"}"\n'
            f'volume_path = "{self.graphroot / "volumes"}"\n')
        self.registries_conf = registries
        self.policy = conf / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        auth = conf / "auth.json"
        auth.write_text(json.dumps({"auths": {}}))
        self.env = {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(registries),
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_CONF": str(containers),
            "REGISTRY_AUTH_FILE": str(auth),
            "TMPDIR": str(self.tmpdir),
        }
        for name in ("REGISTRIES_CONFIG_PATH", "CONTAINER_HOST", "CONTAINER_CONNECTION"):
            self.env.pop(name, None)
        self.storage_flags = ["--root", str(self.graphroot), "--runroot", str(self.runroot),
                              "--storage-driver", "vfs"]

    def close(self) -> None:
        shutil.rmtree(self.short_dir, ignore_errors=True)

    def docker_ref(self, repo: str, ref: str = "latest") -> str:
        sep = "@" if ref.startswith("sha256:") else ":"
        return f"docker://{self.registry.host}/{repo}{sep}{ref}"

    def image_name(self, repo: str, tag: str = "latest") -> str:
        return f"{self.registry.host}/{repo}:{tag}"

    def run(self, argv: list[str], *, timeout: float = 600, check: bool = True,
            ) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                                  timeout=timeout, cwd=self.workdir, check=False)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(self._describe(argv, None, e.stdout, e.stderr,
                                               f"timed out after {timeout}s")) from None
        if check and proc.returncode != 0:
            raise CommandFailed(self._describe(
                argv, proc.returncode, proc.stdout, proc.stderr,
                f"failed after {time.monotonic() - started:.1f}s"))
        return proc

    def _describe(self, argv: list[str], rc: int | None, stdout: Any, stderr: Any,
                  what: str) -> str:
        def text(x: Any) -> str:
            if isinstance(x, bytes):
                x = x.decode(errors="replace")
            return (x or "")[-6000:]
        return (f"command {what} (rc={rc}): {' '.join(argv)}\n"
                f"--- stdout ---\n{text(stdout)}\n--- stderr ---\n{text(stderr)}\n"
                f"--- registry log (tail) ---\n{log_tail(self.registry)}")

    def fail(self, message: str) -> str:
        """An assertion message with the registry log tail appended."""
        return f"{message}\n--- registry log (tail) ---\n{log_tail(self.registry)}"

    def skopeo(self, *args: str, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = require_tool("skopeo")
        # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF (only podman/buildah read it):
        # its hidden global --registries-conf flag points it at the private file.
        return self.run([exe, "--policy", str(self.policy), "--tmpdir", str(self.tmpdir),
                         "--registries-conf", str(self.registries_conf), *args],
                        timeout=timeout, check=check)

    def skopeo_json(self, *args: str) -> Any:
        return json.loads(self.skopeo(*args).stdout)

    def podman(self, *args: str, timeout: float = 600,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = require_tool("podman")
        return self.run([exe, *self.storage_flags, "--tmpdir", str(self.libpod_tmp),
                         "--events-backend", "file", "--cgroup-manager", "cgroupfs", *args],
                        timeout=timeout, check=check)

    def podman_inspect(self, image: str) -> dict[str, Any]:
        out = json.loads(self.podman("image", "inspect", image).stdout)
        assert isinstance(out, list) and len(out) == 1, out
        return dict(out[0])

    def buildah(self, *args: str, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        exe = require_tool("buildah")
        return self.run([exe, *self.storage_flags, *args], timeout=timeout, check=check)


# --------------------------------------------------------------------------- oras


class ArtifactRegistry(oras.provider.Registry):  # type: ignore[misc]  # untyped SDK
    """oras-py's registry client, setting OCI 1.1 `artifactType` on pushed manifests.

    oras-py 0.2.x supports `subject=` on push but has no artifactType parameter; the
    manifest it builds goes through `upload_manifest`, which is the hook used here.
    The pushed manifest's bytes, digest and response are kept for the test to inspect.
    """

    def __init__(self, host: str, artifact_type: str | None = None) -> None:
        super().__init__(hostname=host, insecure=True, tls_verify=False)
        self.artifact_type = artifact_type
        self.last_manifest: dict[str, Any] | None = None

    def upload_manifest(self, manifest: dict[str, Any], container: Any) -> requests.Response:
        if self.artifact_type is not None:
            manifest["artifactType"] = self.artifact_type
        self.last_manifest = manifest
        return super().upload_manifest(manifest, container)  # type: ignore[no-any-return]


def http_get(url: str, accept: str | None = None, timeout: float = 30,
             **params: str) -> requests.Response:
    headers = {"Accept": accept} if accept else {}
    return requests.get(url, headers=headers, params=params or None, timeout=timeout)
