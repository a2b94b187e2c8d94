"""Blocking work on file descriptors (fd_jobs.py). It belongs in store/ beside the blob files;
it moves when api/sendfile.py, which imports it, is free to change."""
