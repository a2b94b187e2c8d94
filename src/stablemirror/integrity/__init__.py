"""Integrity: verified reads and scrub (re-hash, quarantine, self-heal)."""
