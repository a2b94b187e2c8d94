"""Synthetic safetensors models for the delta tests and bench/delta.py: random tensors in
several shards, and their v2s (a fraction of tensors changed, or tensors inserted so every
later offset shifts), pushed as ModelPack-shaped manifests (a minimal builder: the `pack`
command is written elsewhere; the media types are CNCF ModelPack's).
"""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field

import requests

MODEL_MANIFEST_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
FILEPATH = "org.cncf.model.filepath"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Model:
    """shards[i] = list of (tensor name, raw bytes), in file order."""

    shards: list[list[tuple[str, bytes]]]
    changed_bytes: int = 0  # bytes of tensors that differ from the model this came from
    files: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.files = [safetensors_file(s) for s in self.shards]

    @property
    def size(self) -> int:
        return sum(len(f) for f in self.files)


def safetensors_file(tensors: list[tuple[str, bytes]]) -> bytes:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, data in tensors:
        header[name] = {"dtype": "F32", "shape": [len(data) // 4],
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(d for _, d in tensors)


def make_model(seed: int, shards: int, tensors_per_shard: int, tensor_bytes: int) -> Model:
    rng = random.Random(seed)
    return Model([[(f"layers.{s}.{t}.weight", rng.randbytes(tensor_bytes))
                   for t in range(tensors_per_shard)] for s in range(shards)])


def with_changed(model: Model, fraction: float, seed: int) -> Model:
    """v2: `fraction` of the tensors (at least one) get new random values, same shapes."""
    rng = random.Random(seed)
    names = [(s, t) for s, shard in enumerate(model.shards) for t in range(len(shard))]
    picked = set(rng.sample(names, max(1, round(fraction * len(names)))))
    shards = [[(name, rng.randbytes(len(data)) if (s, t) in picked else data)
               for t, (name, data) in enumerate(shard)] for s, shard in enumerate(model.shards)]
    changed = sum(len(model.shards[s][t][1]) for s, t in picked)
    return Model(shards, changed)


def with_inserted(model: Model, count: int, tensor_bytes: int, seed: int) -> Model:
    """v2: `count` new tensors inserted in the middle of the first shard (offsets shift)."""
    rng = random.Random(seed)
    first = list(model.shards[0])
    middle = len(first) // 2
    new = [(f"adapter.{i}.weight", rng.randbytes(tensor_bytes)) for i in range(count)]
    return Model([first[:middle] + new + first[middle:], *model.shards[1:]],
                 count * tensor_bytes)


# -- pushing as a ModelPack-shaped manifest ---------------------------------------------------
def sha256(data: bytes) -> str:
    import hashlib
    return "sha256:" + hashlib.sha256(data).hexdigest()


def modelpack_manifest(model: Model, name: str) -> tuple[bytes, bytes]:
    """(config, manifest) bytes for `model`, one raw weight layer per shard."""
    config = json.dumps({"descriptor": {"name": name}, "modelfs": {
        "type": "layers", "diffIds": [sha256(f) for f in model.files]},
        "config": {"format": "safetensors"}}, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODEL_MANIFEST_ARTIFACT,
        "config": {"mediaType": MODEL_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": WEIGHT_RAW, "digest": sha256(f), "size": len(f),
                    "annotations": {FILEPATH: f"model-{i:05d}.safetensors"}}
                   for i, f in enumerate(model.files)],
    }
    return config, json.dumps(manifest, sort_keys=True).encode()


def push_model(base: str, repo: str, tag: str, model: Model, timeout: float = 120) -> str:
    """Push blobs and manifest with plain HTTP (POST + PUT); returns the manifest digest."""
    config, manifest = modelpack_manifest(model, repo)
    for blob in (config, *model.files):
        r = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=timeout)
        assert r.status_code == 202, (r.status_code, r.text)
        location = r.headers["Location"]
        url = location if location.startswith("http") else base + location
        sep = "&" if "?" in url else "?"
        r = requests.put(f"{url}{sep}digest={sha256(blob)}", data=blob, timeout=timeout,
                         headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, (r.status_code, r.text)
    r = requests.put(f"{base}/v2/{repo}/manifests/{tag}", data=manifest, timeout=timeout,
                     headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, (r.status_code, r.text)
    return sha256(manifest)
