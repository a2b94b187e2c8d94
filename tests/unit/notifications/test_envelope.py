"""The envelope is CNCF distribution's: field names, the omitted empty fields, the URL of
the target, a promotion's channel as its tag, and records joined into one body."""

from __future__ import annotations

import json

from stablemirror.events.model import RegistryEvent
from stablemirror.notifications.envelope import MEDIA_TYPE, Source, envelope, record, record_json

SOURCE = Source(base_url="https://registry.example:5000/", host="registry.example:5000",
                addr="0.0.0.0:5000", instance_id="replica-1")
DIGEST = "sha256:" + "ab" * 32


def test_a_tag_push_has_every_field_of_distribution() -> None:
    event = RegistryEvent(action="push", repository="models/llama", digest=DIGEST,
                          media_type="application/vnd.oci.image.manifest.v1+json", size=812,
                          tag="1.0.0", actor="ci-bot", client="10.0.0.7:40112",
                          user_agent="skopeo/1.13", request_id="req-1", id="ev-1",
                          time=1764600000.25)
    assert record(event, SOURCE) == {
        "id": "ev-1",
        "timestamp": "2025-12-01T14:40:00.250000Z",
        "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": DIGEST, "size": 812, "length": 812,
                   "repository": "models/llama",
                   "url": f"https://registry.example:5000/v2/models/llama/manifests/{DIGEST}",
                   "tag": "1.0.0"},
        "request": {"id": "req-1", "addr": "10.0.0.7:40112", "host": "registry.example:5000",
                    "method": "PUT", "useragent": "skopeo/1.13"},
        "actor": {"name": "ci-bot"},
        "source": {"addr": "0.0.0.0:5000", "instanceID": "replica-1"},
    }
    assert MEDIA_TYPE == "application/vnd.docker.distribution.events.v1+json"


def test_empty_fields_are_left_out_as_distribution_does() -> None:
    tag_delete = record(RegistryEvent(action="delete", repository="r", tag="old"), SOURCE)
    assert tag_delete["target"] == {"repository": "r", "tag": "old"}  # no digest, no url
    assert tag_delete["request"]["method"] == "DELETE"
    assert tag_delete["actor"] == {}  # anonymous


def test_a_mount_points_at_the_blob_and_a_promotion_names_its_channel() -> None:
    mount = record(RegistryEvent(action="mount", repository="r", digest=DIGEST), SOURCE)
    assert mount["target"]["url"].endswith(f"/v2/r/blobs/{DIGEST}")
    assert mount["request"]["method"] == "POST"
    promote = record(RegistryEvent(action="promote", repository="r", digest=DIGEST,
                                   channel="stable"), SOURCE)
    assert promote["target"]["tag"] == "stable"
    assert promote["target"]["url"].endswith(f"/v2/r/manifests/{DIGEST}")


def test_records_join_into_one_body() -> None:
    a = record_json(RegistryEvent(action="push", repository="r", id="1"), SOURCE)
    b = record_json(RegistryEvent(action="delete", repository="r", id="2"), SOURCE)
    body = json.loads(envelope([a, b]))
    assert [e["id"] for e in body["events"]] == ["1", "2"]
