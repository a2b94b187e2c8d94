"""The notification outbox (index/sql_notifications.py; docs/notifications.md)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from stablemirror.index.schema import metadata

# One row per (event, endpoint) still to deliver; a delivered row is deleted. Rows of one
# endpoint go out in `id` order, so `id` is the order events were published in.
notification_deliveries = Table(
    "notification_deliveries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("body", Text, nullable=False),  # the event's record in the envelope (JSON)
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_at", Float, nullable=False),  # not sent before this (the backoff)
    Column("last_error", Text, nullable=True),
    Index("ix_notification_deliveries_endpoint_id", "endpoint", "id"),
)

# One row per endpoint: who delivers its rows now, until when. The holder is the only
# sender of the endpoint, which keeps its events in order and sent once.
notification_leases = Table(
    "notification_leases", metadata,
    Column("endpoint", String(64), primary_key=True),
    Column("owner", String(255), nullable=True),
    Column("expires", Float, nullable=True),
)
