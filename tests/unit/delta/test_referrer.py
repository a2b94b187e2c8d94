"""The chunk-index referrer manifest, weight-layer selection, and the background indexer."""

from __future__ import annotations

import json
import os

from stablemirror.delta.chunker import BackgroundIndexer, Indexer
from stablemirror.delta.referrer import (
    ARTIFACT_TYPE,
    INDEX_MEDIA_TYPE,
    LAYER_ANNOTATION,
    build_referrer,
    index_blob_for,
    is_weight_layer,
    referrer_digests,
)
from stablemirror.oci.digest import Digest
from stablemirror.oci.manifest import Descriptor, parse_manifest

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _index(data: bytes):  # type: ignore[no-untyped-def]
    i = Indexer()
    i.feed(data)
    return i.finish()


def test_referrer_names_each_layer_and_parses_back() -> None:
    a, b = _index(os.urandom(3 << 20)), _index(os.urandom(2 << 20))
    subject = str(Digest.of(b"model"))
    ref = build_referrer(subject, MANIFEST, 5, [a, b])
    m = parse_manifest(ref.manifest, MANIFEST)
    assert m.artifact_type == ARTIFACT_TYPE and m.subject is not None
    assert str(m.subject.digest) == subject
    for index in (a, b):
        d = index_blob_for(m, Digest.parse(f"sha256:{index.layer_hex}"))
        assert d is not None and d.media_type == INDEX_MEDIA_TYPE
        assert dict(ref.blobs)[d.digest] == index.encode()
    assert index_blob_for(m, Digest.of(b"other")) is None
    doc = json.loads(ref.manifest)
    assert doc["layers"][0]["annotations"] == {LAYER_ANNOTATION: f"sha256:{a.layer_hex}"}


def test_referrer_digests_keeps_only_chunk_indexes() -> None:
    body = json.dumps({"manifests": [
        {"digest": "sha256:" + "a" * 64, "artifactType": ARTIFACT_TYPE},
        {"digest": "sha256:" + "b" * 64, "artifactType": "application/other"},
        {"artifactType": ARTIFACT_TYPE}, "junk"]}).encode()
    assert referrer_digests(body) == ["sha256:" + "a" * 64]
    assert referrer_digests(b"not json") == []


def test_weight_layers_are_raw_modelpack_weights_of_some_size() -> None:
    def d(media_type: str, size: int = 10 << 20) -> Descriptor:
        return Descriptor(media_type, Digest.of(b"x"), size)
    assert is_weight_layer(d("application/vnd.cncf.model.weight.v1.raw"))
    assert is_weight_layer(d("application/vnd.cncf.model.weight.v1.tar"))
    assert not is_weight_layer(d("application/vnd.cncf.model.weight.v1.tar+gzip"))
    assert not is_weight_layer(d("application/vnd.cncf.model.weight.v1.tar+zstd"))
    assert not is_weight_layer(d("application/vnd.oci.image.layer.v1.tar"))
    assert not is_weight_layer(d("application/vnd.cncf.model.weight.v1.raw", 1000))


def test_background_indexer_equals_inline() -> None:
    data = os.urandom(9 << 20)
    bg = BackgroundIndexer()
    for i in range(0, len(data), 1 << 20):
        bg.feed(data[i:i + (1 << 20)])
    assert bg.finish() == _index(data)
