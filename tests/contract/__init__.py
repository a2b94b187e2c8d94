"""Contract suites: one per protocol, run against every backend."""
