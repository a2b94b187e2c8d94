"""The policy engine: IAM evaluation (explicit Deny wins, no match denies), conditions,
roles, validation errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from stablemirror.auth.conditions import PolicyError
from stablemirror.auth.policy import (
    ADMIN,
    PULL,
    PUSH,
    REGISTRY_RESOURCE,
    build_policy_set,
    parse_policy,
    public_statement,
    request_context,
    role_statement,
)
from stablemirror.auth.principals import ANONYMOUS, Principal

ISSUE_EXAMPLE = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow", "Principal": {"user": ["alice"]}, "Action": ["registry:Pull"],
        "Resource": ["repository:team/*"],
        "Condition": {"StringEquals": {"sm:PrincipalTag/department": "AI"}},
    }],
}
ALICE_AI = Principal("user", "alice", tags={"department": "AI"})
ALICE_HR = Principal("user", "alice", tags={"department": "HR"})


def decide(doc: dict[str, Any], who: Principal, action: str, resource: str,
           client: str = "10.0.0.1", now: float = 1_700_000_000.0, roles: tuple[Any, ...] = (),
           public: list[str] | None = None) -> Any:
    ps = build_policy_set(roles, public_statement(public or []), parse_policy("p", doc))
    return ps.evaluate(who, action, resource, request_context(who, client, "ua", now))


def test_issue_example_allows_tagged_user_and_names_the_statement() -> None:
    d = decide(ISSUE_EXAMPLE, ALICE_AI, PULL, "repository:team/bert")
    assert d.allowed and d.effect == "Allow"
    assert d.statement is not None and d.statement.source == "policy:p"
    assert "allowed by policy:p statement '#0'" in d.explain()


def test_condition_outside_denies_implicitly_and_explains_the_near_miss() -> None:
    d = decide(ISSUE_EXAMPLE, ALICE_HR, PULL, "repository:team/bert")
    assert not d.allowed and d.effect == "ImplicitDeny" and d.statement is None
    assert "sm:PrincipalTag/department" in d.explain()


@pytest.mark.parametrize(("action", "resource"), [
    (PUSH, "repository:team/bert"),  # action not granted
    (PULL, "repository:other/bert"),  # resource outside the pattern
    (PULL, "repository:team"),  # `team/*` needs something after the slash
])
def test_no_match_denies(action: str, resource: str) -> None:
    assert not decide(ISSUE_EXAMPLE, ALICE_AI, action, resource).allowed


def test_explicit_deny_wins_over_any_allow() -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Sid": "all", "Effect": "Allow", "Principal": "*", "Action": "registry:*",
         "Resource": "*"},
        {"Sid": "no-secret", "Effect": "Deny", "Principal": {"user": ["alice"]},
         "Action": "registry:Pull", "Resource": "repository:secret/*"},
    ]}
    d = decide(doc, ALICE_AI, PULL, "repository:secret/x",
               roles=(role_statement("user", "alice", "admin", "*"),))
    assert not d.allowed and d.effect == "Deny"
    assert d.statement is not None and d.statement.sid == "no-secret"
    assert "denied explicitly" in d.explain()
    assert decide(doc, ALICE_AI, PULL, "repository:public/x").allowed


def test_roles_grant_their_actions_on_their_pattern_only() -> None:
    reader = role_statement("user", "carol", "reader", "team/*")
    carol = Principal("user", "carol")
    empty = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": {"user": ["nobody"]}, "Action": "registry:Pull",
         "Resource": "*"}]}
    assert decide(empty, carol, PULL, "repository:team/a", roles=(reader,)).allowed
    assert not decide(empty, carol, PUSH, "repository:team/a", roles=(reader,)).allowed
    assert not decide(empty, carol, PULL, "repository:x/a", roles=(reader,)).allowed
    admin = role_statement("user", "root", "admin", "*")
    root = Principal("user", "root")
    assert decide(empty, root, ADMIN, REGISTRY_RESOURCE, roles=(admin,)).allowed
    team_admin = role_statement("user", "carol", "admin", "team/*")
    assert not decide(empty, carol, ADMIN, REGISTRY_RESOURCE, roles=(team_admin,)).allowed


def test_groups_robots_and_anonymous() -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"group": ["ml-*"]}, "Action": "registry:Pull",
         "Resource": "repository:models/*"},
        {"Effect": "Allow", "Principal": {"robot": ["ci"]}, "Action": ["registry:Push"],
         "Resource": "repository:models/*"}]}
    member = Principal("user", "dave", groups=("ml-research",))
    assert decide(doc, member, PULL, "repository:models/llama").allowed
    assert not decide(doc, Principal("user", "eve"), PULL, "repository:models/llama").allowed
    assert decide(doc, Principal("robot", "ci"), PUSH, "repository:models/llama").allowed
    # a user named like the robot is not the robot
    assert not decide(doc, Principal("user", "ci"), PUSH, "repository:models/llama").allowed
    assert not decide(doc, ANONYMOUS, PULL, "repository:models/llama").allowed
    assert decide(doc, ANONYMOUS, PULL, "repository:pub/x", public=["pub/*"]).allowed


@pytest.mark.parametrize(("condition", "client", "allowed"), [
    ({"IpAddress": {"sm:SourceIp": "10.0.0.0/8"}}, "10.1.2.3", True),
    ({"IpAddress": {"sm:SourceIp": "10.0.0.0/8"}}, "192.168.1.1", False),
    ({"NotIpAddress": {"sm:SourceIp": ["10.0.0.0/8", "127.0.0.1/32"]}}, "127.0.0.1", False),
    ({"StringLike": {"sm:PrincipalTag/department": "A*"}}, "1.1.1.1", True),
    ({"StringNotEquals": {"sm:PrincipalTag/department": "AI"}}, "1.1.1.1", False),
    ({"StringEquals": {"sm:PrincipalTag/missing": "x"}}, "1.1.1.1", False),
    ({"StringEqualsIfExists": {"sm:PrincipalTag/missing": "x"}}, "1.1.1.1", True),
    ({"StringNotEquals": {"sm:PrincipalTag/missing": "x"}}, "1.1.1.1", True),
    ({"Null": {"sm:PrincipalTag/missing": "true"}}, "1.1.1.1", True),
    ({"Null": {"sm:PrincipalTag/department": "true"}}, "1.1.1.1", False),
    ({"DateLessThan": {"sm:CurrentTime": "2030-01-01T00:00:00Z"}}, "1.1.1.1", True),
    ({"DateGreaterThan": {"sm:CurrentTime": "2030-01-01"}}, "1.1.1.1", False),
    ({"StringEquals": {"sm:PrincipalTag/department": "AI",
                       "sm:Username": "bob"}}, "1.1.1.1", False),  # keys AND together
    ({"StringEquals": {"sm:PrincipalTag/department": ["HR", "AI"]}}, "1.1.1.1", True),
])
def test_conditions(condition: dict[str, Any], client: str, allowed: bool) -> None:
    doc = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "registry:Pull", "Resource": "*",
         "Condition": condition}]}
    assert decide(doc, ALICE_AI, PULL, "repository:x", client=client).allowed is allowed


@pytest.mark.parametrize(("doc", "field"), [
    ([], "$"),
    ({"Version": "2008-10-17", "Statement": []}, "Version"),
    ({"Statement": []}, "Statement"),
    ({"Statement": [{"Effect": "Maybe", "Action": "registry:Pull", "Resource": "*"}]},
     "Statement[0].Effect"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Fly", "Resource": "*"}]},
     "Statement[0].Action"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Pull", "Resource": "s3:x"}]},
     "Statement[0].Resource"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Pull", "Resource": "*",
                     "NotResource": "x"}]}, "Statement[0]"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Pull", "Resource": "*",
                     "Principal": {"AWS": "x"}}]}, "Statement[0].Principal.AWS"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Pull", "Resource": "*",
                     "Condition": {"StringSortOf": {"k": "v"}}}]},
     "Statement[0].Condition.StringSortOf"),
    ({"Statement": [{"Effect": "Allow", "Action": "registry:Pull", "Resource": "*",
                     "Condition": {"IpAddress": {"sm:SourceIp": "not-an-ip"}}}]},
     "Statement[0].Condition.IpAddress.sm:SourceIp"),
])
def test_invalid_documents_name_the_field(doc: Any, field: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy("bad", doc)
    assert err.value.field == field


def test_actions_match_case_insensitively_and_by_wildcard() -> None:
    doc = {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "registry:p*",
                          "Resource": "repository:x"}]}
    assert decide(doc, ALICE_AI, PULL, "repository:x").allowed
    assert decide(doc, ALICE_AI, PUSH, "repository:x").allowed
    assert not decide(doc, ALICE_AI, "registry:Delete", "repository:x").allowed
