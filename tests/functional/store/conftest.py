"""The S3 tests' fixtures: a cluster of replicas on the session's SeaweedFS, and the
contract suite's throwaway PostgreSQL for a shared index."""

from tests.contract.conftest import postgres  # noqa: F401 - a fixture
from tests.support.s3_support import s3_cluster  # noqa: F401 - a fixture
