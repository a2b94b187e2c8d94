"""A small OCI distribution client (aiohttp) for signing and verification tools."""
