"""bench/mirror.py's measurements: stablemirror as a pull-through mirror, side by side with
direct pulls and with docker-registry in proxy mode."""
