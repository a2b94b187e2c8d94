"""Scope parsing of the Docker token spec, and what a token's `access` claim allows."""

from __future__ import annotations

from stablemirror.auth.principals import Principal, split_login
from stablemirror.auth.tokens import Access, Claims, parse_scopes


def test_parse_scopes() -> None:
    assert parse_scopes(["repository:team/x:pull,push"]) == [
        Access("repository", "team/x", ("pull", "push"))]
    # A name may hold a host:port; several scopes may share one value (OAuth2 style).
    assert parse_scopes(["repository:localhost:5000/a:pull registry:catalog:*"]) == [
        Access("repository", "localhost:5000/a", ("pull",)),
        Access("registry", "catalog", ("*",))]
    assert parse_scopes(["garbage", "", "repository::pull"]) == []


def test_only_a_space_separates_scopes() -> None:
    # RFC 6749: a newline is no separator; it stays in the name, which /token then refuses.
    assert parse_scopes(["repository:a\nb:pull  repository:c:push"]) == [
        Access("repository", "a\nb", ("pull",)), Access("repository", "c", ("push",))]
    assert parse_scopes(["repository:a\r\nb:pull"]) == [
        Access("repository", "a\r\nb", ("pull",))]


def test_claims_allow_only_the_granted_actions() -> None:
    c = Claims(Principal("user", "a"), (Access("repository", "team/x", ("pull",)),
                                        Access("registry", "catalog", ("*",))), 0, "j")
    assert c.allows("repository", "team/x", "pull")
    assert not c.allows("repository", "team/x", "push")
    assert not c.allows("repository", "team/y", "pull")
    assert c.allows("registry", "catalog", "*")


def test_logins_and_ids() -> None:
    assert split_login("robot+ci") == ("robot", "ci")
    assert split_login("alice") == ("user", "alice")
    assert Principal("robot", "ci").id == "robot+ci"
