"""bench/run.py's measurements: stablemirror vs. docker-registry as hosted registries."""
