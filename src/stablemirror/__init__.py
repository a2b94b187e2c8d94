"""stablemirror: an OCI registry and pull-through mirror for AI model images."""

__version__ = "0.1.0"
