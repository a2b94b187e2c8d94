"""`stablemirror status` shows a Notifications table from /metrics, per endpoint; none
without endpoints."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from stablemirror.cli.status import Samples, _notifications
from stablemirror.metrics import Metrics


def shown(m: Metrics) -> str:
    out = StringIO()
    _notifications(Samples(m.render().decode()), Console(file=out, width=200))
    return out.getvalue()


def test_a_row_per_endpoint_with_its_backlog() -> None:
    m = Metrics()
    m.notification_endpoint("hooks")
    m.notifications_queued("hooks", 12, 75.0)
    m.notification_failed("hooks")
    m.notification_failed("hooks")
    m.notification_delivered("hooks", 30)
    text = shown(m)
    row = next(line for line in text.splitlines() if "hooks" in line)
    assert "Notifications" in text
    assert [c.strip() for c in row.strip("│ ").split("│")] == [
        "hooks", "12", "1m 15s", "30", "2", "0"], row


def test_nothing_without_endpoints() -> None:
    assert shown(Metrics()) == ""
