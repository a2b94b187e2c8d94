"""Unit tests for the pure oci/ code: no I/O, no server."""
