"""IAM-style condition operators over a request context (pure, no I/O).

A context maps keys (`sm:PrincipalTag/department`, `sm:SourceIp`, ...) to one value or
several (groups). Semantics follow the IAM documentation platform teams already know:
every operator in a block must hold (AND); for one key, any listed value may match (OR);
a multi-valued key matches when any of its values does; a missing key fails the condition,
except for negated operators (which hold), `...IfExists` variants (which hold) and `Null`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stablemirror.oci.patterns import glob_match

ContextValue = str | Sequence[str]
Context = Mapping[str, ContextValue]


class PolicyError(ValueError):
    """A policy document that cannot be applied; `field` names where, `reason` says why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _date(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _in_network(value: str, network: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False


Compare = Callable[[str, str], bool]

# operator -> (comparison of one context value with one policy value, negated?)
_OPERATORS: dict[str, tuple[Compare, bool]] = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True),
    "StringLike": (lambda v, p: glob_match(p, v), False),
    "StringNotLike": (lambda v, p: glob_match(p, v), True),
    "IpAddress": (_in_network, False),
    "NotIpAddress": (_in_network, True),
    "DateLessThan": (lambda v, p: _date(v) < _date(p), False),
    "DateGreaterThan": (lambda v, p: _date(v) > _date(p), False),
    "Bool": (lambda v, p: v.lower() == p.lower(), False),
}


@dataclass(frozen=True, slots=True)
class Condition:
    operator: str  # as written, e.g. "StringEqualsIfExists"
    key: str
    values: tuple[str, ...]

    def holds(self, context: Context) -> bool:
        raw = context.get(self.key)
        present = raw is not None and (isinstance(raw, str) or len(raw) > 0)
        if self.operator == "Null":
            # {"Null": {"k": "true"}}: holds when k is absent.
            want_absent = self.values[0].lower() == "true"
            return want_absent != present
        name = self.operator.removesuffix("IfExists")
        compare, negated = _OPERATORS[name]
        if not present:
            return negated or name != self.operator
        values = [raw] if isinstance(raw, str) else list(raw or ())
        matched = any(compare(v, p) for v in values for p in self.values)
        return not matched if negated else matched

    def describe(self) -> str:
        return f"{self.operator}({self.key} in {list(self.values)})"


def parse_conditions(block: object, where: str) -> tuple[Condition, ...]:
    if block is None:
        return ()
    if not isinstance(block, dict):
        raise PolicyError(where, "Condition must be an object of operators")
    out: list[Condition] = []
    for operator, pairs in block.items():
        base = operator.removesuffix("IfExists")
        if operator != "Null" and base not in _OPERATORS:
            raise PolicyError(f"{where}.{operator}", "unknown condition operator")
        if not isinstance(pairs, dict) or not pairs:
            raise PolicyError(f"{where}.{operator}", "must map condition keys to values")
        for key, raw in pairs.items():
            values = [raw] if isinstance(raw, str | bool | int | float) else raw
            if not isinstance(values, list) or not values:
                raise PolicyError(f"{where}.{operator}.{key}", "needs a value or a list")
            text = tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
            for v in text:
                _check_value(base, v, f"{where}.{operator}.{key}")
            out.append(Condition(operator, key, text))
    return tuple(out)


def _check_value(operator: str, value: str, where: str) -> None:
    try:
        if operator in ("IpAddress", "NotIpAddress"):
            ipaddress.ip_network(value, strict=False)
        elif operator.startswith("Date"):
            _date(value)
    except ValueError as err:
        raise PolicyError(where, f"bad value {value!r}: {err}") from None
