"""What the hot tier's bookkeeping costs per GET (docs/storage.md, "Hot tier"), measured on
the real classes over a throwaway directory: a cold read's hit transaction, a hot
`local_path` of a held copy, a flush of hot hits. Run from the repository root:

    .venv/bin/python bench/hot_costs.py [--dir DIR]   # DIR: on the disk the hot tier uses
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from stablemirror.oci.digest import Digest
from stablemirror.store.filesystem import FilesystemBlobStore
from stablemirror.store.hot_config import HotTierSettings
from stablemirror.store.tiered import TieredBlobStore

COLD_HITS = 2000
HOT_GETS = 100_000


async def publish(cold: FilesystemBlobStore, data: bytes) -> Digest:
    async def body():  # type: ignore[no-untyped-def]
        yield data
    d, uid = Digest.of(data), uuid.uuid4().hex
    await cold.upload_create(uid)
    await cold.upload_append(uid, 0, body())
    await cold.upload_verify(uid, d)
    await cold.upload_publish(uid, d)
    return d


async def main(base: Path) -> None:
    cold = FilesystemBlobStore(base / "cold")
    counting = TieredBlobStore(cold, base / "hot-a",
                               HotTierSettings(promote_after=1_000_000, window=3600))
    digests = [Digest.of(os.urandom(16)) for _ in range(COLD_HITS)]
    t0 = time.perf_counter()
    for d in digests:
        counting.index.cold_hit(str(d), time.time())
    print(f"cold read, hit recorded:  {(time.perf_counter() - t0) / COLD_HITS * 1e6:7.1f} us")
    tier = TieredBlobStore(cold, base / "hot-b", HotTierSettings(promote_after=1))
    d = await publish(cold, os.urandom(4096))
    async for _chunk in tier.read(d):
        pass
    for _ in range(200):
        if tier.local_path(d) is not None:
            break
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    for _ in range(HOT_GETS):
        tier.local_path(d)
    print(f"hot GET, local_path:      {(time.perf_counter() - t0) / HOT_GETS * 1e6:7.2f} us")
    pending = {str(x): (3, time.time()) for x in digests[:500]}
    t0 = time.perf_counter()
    counting.index.hot_hits(pending)
    print(f"flush of 500 hot digests: {(time.perf_counter() - t0) * 1e3:7.2f} ms")
    await tier.aclose()
    await counting.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        asyncio.run(main(base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
