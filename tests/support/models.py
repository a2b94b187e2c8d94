"""Synthetic model directories for the models tests and bench: safetensors shards of random
tensors, a config.json, a tokenizer, a README, written the way Hugging Face lays them out."""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "U8": 1}


def safetensors_bytes(header: dict[str, object]) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]],
                      rng: random.Random, metadata: dict[str, str] | None = None) -> int:
    """Random tensor bytes under a valid header; the number of parameters."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    at = 0
    params = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for d in shape:
            count *= d
        size = count * DTYPE_SIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + size]}
        at += size
        params += count
    with path.open("wb") as f:
        f.write(safetensors_bytes(header))
        left = at
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return params


def synthetic_model(root: Path, *, shards: int = 3, shard_bytes: int = 1 << 20,
                    seed: int = 1, dtype: str = "F16") -> int:
    """A model directory; the total parameter count of its shards."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    per_tensor = 4
    width = 64
    rows = max(1, shard_bytes // (per_tensor * width * DTYPE_SIZE[dtype]))
    params = 0
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {f"layers.{i}.w{j}": (dtype, [rows, width]) for j in range(per_tensor)}
        params += write_safetensors(root / name, tensors, rng)
        weight_map.update(dict.fromkeys(tensors, name))
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, sort_keys=True))
    (root / "config.json").write_text(json.dumps(
        {"model_type": "llama", "torch_dtype": "float16", "hidden_size": width}))
    (root / "generation_config.json").write_text('{"do_sample": false}')
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(50)}}))
    (root / "README.md").write_text("# synthetic\n")
    (root / "LICENSE").write_text("Apache-2.0\n")
    sub = root / "scripts"
    sub.mkdir(exist_ok=True)
    (sub / "run.py").write_text("print('hi')\n")
    os.utime(root / "README.md", (rng.randrange(1 << 30),) * 2)
    return params
