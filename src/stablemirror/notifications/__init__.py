"""Registry notifications: each event, as CNCF distribution's envelope, to every endpoint
in `notifications.endpoints[]`, signed, from a persistent outbox (docs/notifications.md)."""
