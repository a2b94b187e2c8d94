"""The Docker token flow's challenge, parsed once for the client and the mirror's upstreams."""

from __future__ import annotations

from stablemirror.client.auth import parse_challenge


def test_quoted_unquoted_and_escaped_parameters() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service=registry.example,'
        'scope="repository:a/b:pull,push", error="say \\"hi\\""')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a/b:pull,push", "error": 'say \\"hi\\"'}


def test_the_scheme_is_case_insensitive_and_basic_has_a_realm() -> None:
    assert parse_challenge('BASIC realm="registry"') == ("basic", {"realm": "registry"})
