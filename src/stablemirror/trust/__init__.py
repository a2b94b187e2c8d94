"""Trust: cosign-compatible keys and signatures, signing policies and their enforcement."""
