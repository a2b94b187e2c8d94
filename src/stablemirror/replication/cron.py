"""Five-field cron expressions (minute hour day-of-month month day-of-week), pure.

`*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`; day-of-week 0-7 (0 and 7
are Sunday); when both day fields are restricted a day matching either counts (as in
Vixie cron). Times are UTC."""

from __future__ import annotations

import time
from dataclasses import dataclass

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = ("minute", "hour", "day of month", "month", "day of week")


class CronInvalid(ValueError):
    pass


def _field(text: str, lo: int, hi: int, name: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(body)
        except ValueError:
            raise CronInvalid(f"{name}: {part!r} is not a number, range or step") from None
        if step < 1 or start < lo or end > hi or start > end:
            raise CronInvalid(f"{name}: {part!r} is outside {lo}-{hi}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, epoch_minute: int) -> bool:
        """Whether the minute starting at `epoch_minute * 60` (UTC) is a tick."""
        t = time.gmtime(epoch_minute * 60)
        if t.tm_min not in self.minutes or t.tm_hour not in self.hours \
                or t.tm_mon not in self.months:
            return False
        weekday = (t.tm_wday + 1) % 7  # Python: Monday 0; cron: Sunday 0
        day_ok = t.tm_mday in self.days
        week_ok = weekday in self.weekdays or (weekday == 0 and 7 in self.weekdays)
        if self.any_day or self.any_weekday:
            return day_ok and week_ok
        return day_ok or week_ok


def parse_cron(text: str) -> Cron:
    parts = text.split()
    if len(parts) != 5:
        raise CronInvalid("expected 5 fields (minute hour day month weekday)")
    fields = [_field(p, lo, hi, n) for p, (lo, hi), n in zip(parts, _BOUNDS, _NAMES,
                                                              strict=True)]
    minutes, hours, days, months, weekdays = fields
    return Cron(text, minutes, hours, days, months, weekdays,
                any_day=parts[2] == "*", any_weekday=parts[4] == "*")
