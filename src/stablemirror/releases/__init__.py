"""Release channels: SemVer version tags, channels (alpha, beta, stable, ...) with admission
rules, weighted gray releases resolved per client identity, floating tags, history,
rollback and retention. See docs/releases.md."""
