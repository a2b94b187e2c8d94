"""Roles and IAM-style policy documents, and the one evaluation rule (pure, no I/O).

Every grant is a statement: a role binding becomes an Allow statement, each statement of
an applied policy document is one, and public namespaces are one. Evaluation is IAM's:
an explicit Deny that matches wins; otherwise an Allow that matches grants; otherwise the
request is denied implicitly. The Decision names the statement that decided, which is what
`stablemirror policy test` prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from stablemirror.auth.conditions import (
    Condition,
    Context,
    PolicyError,
    parse_conditions,
)
from stablemirror.auth.principals import Principal
from stablemirror.oci.patterns import glob_match

PULL, PUSH, DELETE = "registry:Pull", "registry:Push", "registry:Delete"
DOCKER_TO_ACTION = {"pull": PULL, "push": PUSH, "delete": DELETE}  # token-scope actions
PROMOTE, ADMIN = "registry:Promote", "registry:Admin"
ACTIONS = (PULL, PUSH, DELETE, PROMOTE, ADMIN)
VERSION = "2012-10-17"
# The resource of registry-wide operations (catalog, admin API); repositories are
# `repository:<name>`.
REGISTRY_RESOURCE = "registry"

ROLES: dict[str, tuple[str, ...]] = {
    "admin": ACTIONS,
    "maintainer": (PULL, PUSH, DELETE, PROMOTE),
    "developer": (PULL, PUSH),
    "reader": (PULL,),
}

Effect = Literal["Allow", "Deny"]
_PRINCIPAL_KINDS = ("user", "robot", "group")
_STATEMENT_KEYS = {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}


def repository_resource(name: str) -> str:
    return f"repository:{name}"


@dataclass(frozen=True, slots=True)
class Statement:
    sid: str
    effect: Effect
    # None: any caller, anonymous included ("Principal": "*" or no Principal element).
    principals: Mapping[str, tuple[str, ...]] | None
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[Condition, ...] = ()
    source: str = ""  # "policy:NAME", "role", "public"

    def matches_principal(self, who: Principal) -> bool:
        if self.principals is None:
            return True
        if not who.authenticated:
            return False
        names = self.principals.get(who.kind, ())
        if any(glob_match(p, who.name) for p in names):
            return True
        groups = self.principals.get("group", ())
        return any(glob_match(p, g) for p in groups for g in who.groups)

    def applies(self, who: Principal, action: str, resource: str) -> bool:
        """Principal, action and resource match (conditions aside)."""
        return (
            self.matches_principal(who)
            and any(glob_match(a, action, ignore_case=True) for a in self.actions)
            and any(glob_match(r, resource) for r in self.resources)
        )

    def failed_conditions(self, context: Context) -> list[Condition]:
        return [c for c in self.conditions if not c.holds(context)]

    def matches(self, who: Principal, action: str, resource: str, context: Context) -> bool:
        return self.applies(who, action, resource) and not self.failed_conditions(context)

    def describe(self) -> str:
        where = f"{self.source} " if self.source else ""
        return f"{where}statement {self.sid!r} ({self.effect})"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"Sid": self.sid, "Effect": self.effect,
                               "Action": list(self.actions), "Resource": list(self.resources)}
        doc["Principal"] = ("*" if self.principals is None
                            else {k: list(v) for k, v in self.principals.items()})
        if self.conditions:
            block: dict[str, dict[str, list[str]]] = {}
            for c in self.conditions:
                block.setdefault(c.operator, {})[c.key] = list(c.values)
            doc["Condition"] = block
        return doc


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    effect: Literal["Allow", "Deny", "ImplicitDeny"]
    statement: Statement | None
    action: str
    resource: str
    # On an implicit deny: statements that applied but whose conditions did not hold.
    near_misses: tuple[tuple[Statement, tuple[Condition, ...]], ...] = ()

    def explain(self) -> str:
        if self.statement is None:
            why = "; ".join(
                f"{st.describe()} applies but {', '.join(c.describe() for c in failed)} "
                "does not hold" for st, failed in self.near_misses)
            return (f"{self.action} on {self.resource}: denied implicitly "
                    f"(no statement allows it{'; ' + why if why else ''})")
        verdict = "allowed" if self.allowed else "denied explicitly"
        return f"{self.action} on {self.resource}: {verdict} by {self.statement.describe()}"

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "effect": self.effect, "action": self.action,
                "resource": self.resource, "explanation": self.explain(),
                "statement": None if self.statement is None else {
                    "source": self.statement.source, **self.statement.to_json()}}


@dataclass(frozen=True)
class PolicySet:
    """Everything that grants or denies, in a stable order (roles, public, policies)."""

    statements: tuple[Statement, ...] = field(default_factory=tuple)

    def evaluate(self, who: Principal, action: str, resource: str,
                 context: Context) -> Decision:
        allow: Statement | None = None
        for st in self.statements:
            if not st.matches(who, action, resource, context):
                continue
            if st.effect == "Deny":
                return Decision(False, "Deny", st, action, resource)
            if allow is None:
                allow = st
        if allow is not None:
            return Decision(True, "Allow", allow, action, resource)
        near = tuple((st, tuple(st.failed_conditions(context))) for st in self.statements
                     if st.effect == "Allow" and st.conditions
                     and st.applies(who, action, resource))
        return Decision(False, "ImplicitDeny", None, action, resource, near)


def _strings(raw: object, where: str) -> tuple[str, ...]:
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(
            isinstance(v, str) and v for v in values):
        raise PolicyError(where, "must be a non-empty string or list of strings")
    return tuple(values)


def _principals(raw: object, where: str) -> Mapping[str, tuple[str, ...]] | None:
    if raw is None or raw == "*":
        return None
    if not isinstance(raw, dict) or not raw:
        raise PolicyError(where, 'must be "*" or {"user"|"robot"|"group": [names]}')
    out: dict[str, tuple[str, ...]] = {}
    for kind, names in raw.items():
        if kind not in _PRINCIPAL_KINDS:
            raise PolicyError(f"{where}.{kind}", f"unknown principal kind; use {_PRINCIPAL_KINDS}")
        out[kind] = _strings(names, f"{where}.{kind}")
    return out


def _action(action: str, where: str) -> str:
    known = {a.lower() for a in ACTIONS}
    if action == "*" or action.lower() in known:
        return action
    if ("*" in action or "?" in action) and action.lower().startswith("registry:"):
        return action
    raise PolicyError(where, f"unknown action {action!r}; use one of {ACTIONS} or registry:*")


def _resource(resource: str, where: str) -> str:
    if resource == "*" or resource == REGISTRY_RESOURCE or resource.startswith("repository:"):
        return resource
    raise PolicyError(where, f"resource {resource!r} must be repository:PATTERN, "
                      f"{REGISTRY_RESOURCE!r} or *")


def parse_policy(name: str, doc: object) -> tuple[Statement, ...]:
    """Validate an IAM-style document; raise PolicyError naming the offending field."""
    if not isinstance(doc, dict):
        raise PolicyError("$", "a policy document is a JSON object")
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise PolicyError("$", f"unsupported elements {sorted(unknown)}")
    if doc.get("Version", VERSION) != VERSION:
        raise PolicyError("Version", f"must be {VERSION!r}")
    raw = doc.get("Statement")
    items = [raw] if isinstance(raw, dict) else raw
    if not isinstance(items, list) or not items:
        raise PolicyError("Statement", "must be a statement or a non-empty list of them")
    out: list[Statement] = []
    for i, st in enumerate(items):
        where = f"Statement[{i}]"
        if not isinstance(st, dict):
            raise PolicyError(where, "a statement is a JSON object")
        extra = set(st) - _STATEMENT_KEYS
        if extra:
            raise PolicyError(where, f"unsupported elements {sorted(extra)} "
                              "(NotAction/NotResource/NotPrincipal are not supported)")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"{where}.Effect", 'must be "Allow" or "Deny"')
        actions = tuple(_action(a, f"{where}.Action")
                        for a in _strings(st.get("Action"), f"{where}.Action"))
        resources = tuple(_resource(r, f"{where}.Resource")
                          for r in _strings(st.get("Resource"), f"{where}.Resource"))
        out.append(Statement(
            sid=str(st.get("Sid") or f"#{i}"), effect=effect,
            principals=_principals(st.get("Principal"), f"{where}.Principal"),
            actions=actions, resources=resources,
            conditions=parse_conditions(st.get("Condition"), f"{where}.Condition"),
            source=f"policy:{name}"))
    return tuple(out)


def role_statement(kind: str, principal: str, role: str, pattern: str) -> Statement:
    """A role bound to a user, robot or group on a repository pattern, as a statement.
    The admin role on every repository ("*") also grants registry-wide administration."""
    if role not in ROLES:
        raise PolicyError("role", f"unknown role {role!r}; use one of {sorted(ROLES)}")
    if kind not in _PRINCIPAL_KINDS:
        raise PolicyError("principal", f"unknown principal kind {kind!r}")
    resources = [repository_resource(pattern)]
    if role == "admin" and pattern == "*":
        resources.append(REGISTRY_RESOURCE)
    return Statement(sid=f"{role}:{kind}:{principal}:{pattern}", effect="Allow",
                     principals={kind: (principal,)}, actions=ROLES[role],
                     resources=tuple(resources), source="role")


def public_statement(patterns: Sequence[str]) -> Statement | None:
    if not patterns:
        return None
    return Statement(sid="public-namespaces", effect="Allow", principals=None,
                     actions=(PULL,), resources=tuple(repository_resource(p) for p in patterns),
                     source="public")


def build_policy_set(roles: Iterable[Statement], public: Statement | None,
                     policies: Iterable[Statement]) -> PolicySet:
    head = [*roles, *([public] if public is not None else [])]
    return PolicySet(tuple([*head, *policies]))


def request_context(who: Principal, client: str, user_agent: str,
                    now: float) -> dict[str, str | tuple[str, ...]]:
    """The condition keys a request carries (documented in docs/auth.md)."""
    ctx: dict[str, str | tuple[str, ...]] = {
        "sm:PrincipalType": who.kind,
        "sm:Username": who.name,
        "sm:PrincipalId": who.id,
        "sm:IdentityProvider": who.provider,
        "sm:PrincipalGroup": who.groups,
        "sm:SourceIp": client,
        "sm:UserAgent": user_agent,
        "sm:CurrentTime": datetime.fromtimestamp(now, UTC).isoformat(),
        "sm:EpochTime": str(int(now)),
    }
    for key, value in who.tags.items():
        ctx[f"sm:PrincipalTag/{key}"] = value
    return ctx
