"""Replication: copying images between registries (and OCI layouts) byte for byte, the rules
that say what to copy when, and their status (docs/replication.md)."""
