"""Pure OCI distribution-spec code: digests, names, media types, manifests, errors. No I/O."""
