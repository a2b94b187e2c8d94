"""Running the server: start-up checks, the pre-forked worker processes, their metrics directory."""
