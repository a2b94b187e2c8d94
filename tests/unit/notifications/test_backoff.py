"""Retry delays double per failure from the first delay, stay within the cap, and the
jitter only spreads them over the upper half."""

from __future__ import annotations

import pytest

from stablemirror.notifications.backoff import retry_delay


@pytest.mark.parametrize(("attempts", "full"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0),
                                                 (7, 60.0), (40, 60.0)])
def test_doubling_up_to_the_cap(attempts: int, full: float) -> None:
    assert retry_delay(attempts, 1.0, 60.0, jitter=lambda: 0.0) == pytest.approx(full / 2)
    assert retry_delay(attempts, 1.0, 60.0, jitter=lambda: 0.999999) == pytest.approx(
        full, rel=1e-5)


def test_never_above_the_cap_whatever_the_jitter() -> None:
    for attempts in range(1, 80):
        assert 0.05 <= retry_delay(attempts, 0.1, 5.0) <= 5.0
