"""obstore vs aiobotocore on one S3 endpoint: streaming multipart PUT and streaming GET.

    .venv/bin/python bench/s3_clients.py --endpoint http://127.0.0.1:PORT --mib 256

Each client in its own child process (so peak RSS is its own): wall time, CPU time
(user+sys) and peak RSS for a PUT of --mib MiB, streamed in 8 MiB parts from a generator
(nothing but one part in memory), then a streaming GET of the object. The numbers and the
decision they fed are in docs/storage.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator

PART = 8 << 20


async def _payload(total: int) -> AsyncIterator[bytes]:
    block = os.urandom(PART)
    sent = 0
    while sent < total:
        n = min(PART, total - sent)
        yield block[:n]
        sent += n


async def run_obstore(endpoint: str, bucket: str, total: int) -> dict[str, float]:
    import obstore
    from obstore.store import S3Store

    store = S3Store(bucket, endpoint=endpoint, region="us-east-1", skip_signature=True,
                    client_options={"allow_http": True})
    t0 = time.monotonic()
    await obstore.put_async(store, "bench/obstore", _payload(total), chunk_size=PART,
                            max_concurrency=int(os.environ.get("OBSTORE_CONCURRENCY", "1")))
    t1 = time.monotonic()
    got = 0
    resp = await obstore.get_async(store, "bench/obstore")
    async for chunk in resp.stream(min_chunk_size=1 << 20):
        got += len(chunk)
    t2 = time.monotonic()
    assert got == total, got
    return {"put_s": t1 - t0, "get_s": t2 - t1}


async def run_aiobotocore(endpoint: str, bucket: str, total: int) -> dict[str, float]:
    from aiobotocore.session import get_session
    from botocore import UNSIGNED
    from botocore.config import Config

    cfg = Config(signature_version=UNSIGNED, s3={"addressing_style": "path"},
                 request_checksum_calculation="when_required",
                 response_checksum_validation="when_required")
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                           config=cfg) as s3:
        key = "bench/aiobotocore"
        t0 = time.monotonic()
        up = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        parts = []
        n = 0
        async for data in _payload(total):  # sequential parts, as a PATCH stream arrives
            n += 1
            r = await s3.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                     PartNumber=n, Body=data)
            parts.append({"PartNumber": n, "ETag": r["ETag"]})
        await s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"],
                                           MultipartUpload={"Parts": parts})
        t1 = time.monotonic()
        got = 0
        r = await s3.get_object(Bucket=bucket, Key=key)
        async with r["Body"] as body:
            while chunk := await body.read(1 << 20):
                got += len(chunk)
        t2 = time.monotonic()
        assert got == total, got
        return {"put_s": t1 - t0, "get_s": t2 - t1}


def child(client: str, endpoint: str, bucket: str, total: int) -> None:
    fn = run_obstore if client == "obstore" else run_aiobotocore
    c0 = time.process_time()
    out = asyncio.run(fn(endpoint, bucket, total))
    out["cpu_s"] = time.process_time() - c0
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", default="client-bench")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--child")
    a = ap.parse_args()
    total = a.mib << 20
    if a.child:
        child(a.child, a.endpoint, a.bucket, total)
        return
    import requests

    requests.put(f"{a.endpoint}/{a.bucket}", timeout=10)
    print(f"{a.mib} MiB, endpoint {a.endpoint}")
    for client in ("obstore", "aiobotocore"):
        r = subprocess.run([sys.executable, __file__, "--endpoint", a.endpoint, "--bucket",
                            a.bucket, "--mib", str(a.mib), "--child", client],
                           capture_output=True, text=True, check=True)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        mib = a.mib
        print(f"{client:12} PUT {m['put_s']:.2f}s ({mib / m['put_s']:.0f} MiB/s)  "
              f"GET {m['get_s']:.2f}s ({mib / m['get_s']:.0f} MiB/s)  "
              f"CPU {m['cpu_s']:.2f}s  peak RSS {m['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
