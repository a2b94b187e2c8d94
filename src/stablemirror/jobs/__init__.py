"""The persistent job queue's runner: leases, heartbeats, retries, periodic slots."""
