"""Registry metadata (repositories, tags, manifests, referrers, uploads) behind one protocol."""
