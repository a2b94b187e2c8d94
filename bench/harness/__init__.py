"""The harness every benchmark script shares: servers and proxies, timing and CPU accounting,
test data, blob transfers, the results file and the common command-line options.

The scripts (bench/run.py, bench/mirror.py, bench/verify_on_read.py) put bench/ on sys.path by
being run from it, so this package is imported as `harness`.  It drives stablemirror only
through its command line (`python -m stablemirror serve ...`), never through its modules.
"""
