"""Functional tests: real processes (server and clients) on loopback."""
