"""HTTP layer: parses, authorizes, serializes, and calls one service method per request."""
