"""Low-level file mechanics the other rooms share: work on file descriptors in threads
without borrowing fd numbers (fd_jobs.py), files several processes create exactly once
(create_once.py)."""
