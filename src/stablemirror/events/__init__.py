"""Registry events (push, tag move, delete, promotion): what changed, for the listeners
that act on it (notification endpoints, event-triggered replication rules)."""
