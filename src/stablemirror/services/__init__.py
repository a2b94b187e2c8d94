"""Services: what the registry does, independent of HTTP."""
