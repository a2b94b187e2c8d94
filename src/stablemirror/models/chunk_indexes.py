"""Chunk indexes of packed weight layers (docs/delta.md), made in pack's one pass.

Each weight file big enough to be indexed gets a `BackgroundIndexer` fed from the same
reads that hash it (models/layer_reader.py), so indexing costs a second core rather than a
second read. After the model manifest is pushed, `referrer` turns the indexes into the
chunk-index referrer. Its layers follow the manifest's weight layers in the order the
registry's own indexer uses (delta/referrer.py `weight_layers`), so a stablemirror that
indexes the push itself arrives at the same referrer digest: one referrer, not two.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

from stablemirror.client.registry import RegistryClient
from stablemirror.delta.chunker import BackgroundIndexer
from stablemirror.delta.format import ChunkIndex
from stablemirror.delta.referrer import (
    MANIFEST_MEDIA_TYPE,
    MIN_INDEXED_SIZE,
    IndexReferrer,
    build_referrer,
    weight_layers,
)
from stablemirror.models.artifact import PackedFile
from stablemirror.models.layer_reader import Sink
from stablemirror.models.pack import PlannedFile
from stablemirror.oci import mediatypes as mt
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import parse_manifest


class PackIndexes:
    def __init__(self) -> None:
        self._indexers: dict[str, BackgroundIndexer] = {}

    def sinks(self, f: PlannedFile) -> Sequence[Sink]:
        """`ModelPacker(extra_sinks=...)`: an indexer for each weight file worth one."""
        if f.kind != "weight" or f.size < MIN_INDEXED_SIZE:
            return ()
        indexer = BackgroundIndexer()
        self._indexers[f.path] = indexer
        return (indexer.feed,)

    def referrer(self, manifest: bytes, files: Sequence[PackedFile]) -> IndexReferrer | None:
        """The referrer for `manifest`, or None when some weight layer has no index (the
        registry's indexer, where there is one, covers it then)."""
        by_digest: dict[str, ChunkIndex] = {}
        for f in files:
            indexer = self._indexers.pop(f.path, None)
            if indexer is not None:
                by_digest[str(f.digest)] = dataclasses.replace(indexer.finish(),
                                                               layer_hex=f.digest.hex)
        parsed = parse_manifest(manifest, mt.OCI_MANIFEST, "sha256")
        layers = weight_layers(parsed)
        if not layers or any(str(d.digest) not in by_digest for d in layers):
            return None
        return build_referrer(str(Digest.of(manifest)), mt.OCI_MANIFEST, len(manifest),
                              [by_digest[str(d.digest)] for d in layers])

    def close_on_failure(self) -> None:
        """Stop indexers that `referrer` did not take (a failed pack): their threads end."""
        for indexer in self._indexers.values():
            with contextlib.suppress(Exception):
                indexer.finish()
        self._indexers.clear()


async def push_referrer(client: RegistryClient, repository: str,
                        referrer: IndexReferrer) -> None:
    """Upload the index blobs the registry lacks, then the referrer manifest by digest."""
    for _digest, data in referrer.blobs:
        await client.push_blob(repository, data)
    await client.put_manifest(repository, str(referrer.digest), referrer.manifest,
                              MANIFEST_MEDIA_TYPE)
