"""The S3 tests' fixtures: a cluster of replicas on the session's SeaweedFS."""

from tests.support.s3_support import s3_cluster  # noqa: F401 - a fixture
