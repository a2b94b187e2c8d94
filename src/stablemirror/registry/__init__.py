"""The registry: the service protocol every namespace implements, the hosted side, the
forwarding base of wrappers, garbage collection and health."""
