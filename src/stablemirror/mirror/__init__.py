"""The pull-through mirror: its settings, namespaces (routing), proxied reads, upstream groups,
single-flight fetches and their on-disk files, the part writer, eviction."""
