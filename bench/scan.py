"""Throughput of the model-file analyzers (docs/scanning.md), written to bench/RESULTS.md.

    .venv/bin/python bench/scan.py [--safetensors-gib 4] [--pickle-gib 1] [--opcodes-mib 64]

Files are written to a temporary directory: the safetensors shard and the large-payload
pickle are sparse (their tensor bytes are never read by the analyzers, which is the
point), the torch zip and the opcode-dense pickle are real bytes. MB/s = 10^6 bytes/s of
file size over wall time of one analysis (best of 3), page cache warm.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.analyze import Analyzer

GiB, MiB = 1 << 30, 1 << 20
RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN, END = "<!-- BEGIN scan -->", "<!-- END scan -->"


def sparse_safetensors(path: Path, size: int) -> None:
    n_tensors = 64
    per = (size // n_tensors) // 4 * 4
    doc = {f"layers.{i}.weight": {"dtype": "F32", "shape": [per // 4],
                                  "data_offsets": [i * per, (i + 1) * per]}
           for i in range(n_tensors)}
    header = json.dumps(doc).encode()
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + n_tensors * per)


def sparse_pickle(path: Path, size: int) -> None:
    """A protocol 4 pickle of an OrderedDict of few large byte strings (BINBYTES8)."""
    n = 16
    per = size // n
    with path.open("wb") as f:
        f.write(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00")
        f.write(b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94(")
        for i in range(n):
            key = f"w{i}".encode()
            f.write(b"\x8c" + bytes([len(key)]) + key + b"\x8e" + struct.pack("<Q", per))
            f.seek(per, os.SEEK_CUR)
        f.write(b"u.")


def dense_pickle(path: Path, size: int) -> None:
    """Many small objects: every opcode is walked (the analyzer's worst case per byte)."""
    items = [(i, float(i), f"k{i}") for i in range(size // 24)]
    path.write_bytes(pickle.dumps(items, protocol=4))


def torch_zip(path: Path, size: int) -> None:
    data_pkl = pickle.dumps({"note": "header only"}, protocol=2)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        chunk = os.urandom(MiB)
        for i in range(max(1, size // (64 * MiB))):
            with z.open(f"archive/data/{i}", "w") as out:
                for _ in range(64):
                    out.write(chunk)


def measure(path: Path, runs: int = 3) -> tuple[float, int]:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        with path.open("rb") as f:
            findings = Analyzer(Allowlist()).analyze(f, path.name)
        best = min(best, time.perf_counter() - started)
        assert findings == [], findings
    return best, path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--safetensors-gib", type=float, default=4)
    ap.add_argument("--pickle-gib", type=float, default=1)
    ap.add_argument("--zip-gib", type=float, default=1)
    ap.add_argument("--opcodes-mib", type=float, default=64)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        root = Path(tmp)
        cases = [
            ("safetensors shard (header checked, sparse)", "model.safetensors",
             sparse_safetensors, int(args.safetensors_gib * GiB)),
            ("pickle checkpoint, 16 large tensors (sparse)", "big.pkl", sparse_pickle,
             int(args.pickle_gib * GiB)),
            ("PyTorch zip checkpoint (storages skipped)", "pytorch_model.bin", torch_zip,
             int(args.zip_gib * GiB)),
            ("opcode-dense pickle (every opcode walked)", "dense.pkl", dense_pickle,
             int(args.opcodes_mib * MiB)),
        ]
        for label, name, make, size in cases:
            path = root / name
            make(path, size)
            seconds, actual = measure(path)
            rows.append((label, actual, seconds, actual / seconds / 1e6))
            path.unlink()
    load = os.getloadavg()
    lines = [BEGIN, "## Model-file analysis (`bench/scan.py`)", "",
             f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
             f"- Machine: {os.cpu_count()} CPUs, Linux {platform.release()}, "
             f"Python {platform.python_version()}; load average after: "
             f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
             f"- Command: `.venv/bin/python bench/scan.py {' '.join(sys.argv[1:])}`".rstrip(),
             "- One analysis in one thread, best of 3, page cache warm; MB/s = file size "
             "(10^6 bytes) / wall time",
             "", "| file | size | time | MB/s |", "|---|---|---|---|"]
    for label, size, seconds, rate in rows:
        lines.append(f"| {label} | {size / MiB:,.0f} MiB | {seconds * 1000:,.1f} ms | "
                     f"{rate:,.0f} |")
    lines += ["", "Sparse files: the analyzers never read tensor bytes of safetensors, "
              "large pickle payloads (skipped by seeking) or torch storages, so their cost "
              "does not grow with the weights; the opcode-dense pickle is the per-byte "
              "worst case of the pickle walker. Scans run after the push has answered "
              "(docs/scanning.md), so none of this is in a push's response time.", END]
    text = RESULTS.read_text() if RESULTS.exists() else ""
    block = "\n".join(lines)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(block)


if __name__ == "__main__":
    main()
