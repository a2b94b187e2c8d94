"""The signature header is HMAC-SHA256 of the exact body, as any receiver computes it with
the standard library; a changed body or a wrong secret does not verify."""

from __future__ import annotations

import hashlib
import hmac

from stablemirror.notifications.signature import HEADER, sign, verify

SECRET = b"0123456789abcdef-secret"
BODY = b'{"events":[{"id":"1"}]}'


def test_a_receiver_computes_the_same_value() -> None:
    expected = "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY) == expected
    assert HEADER == "Stablemirror-Signature-256"


def test_only_the_same_body_and_secret_verify() -> None:
    header = sign(SECRET, BODY)
    assert verify(SECRET, BODY, header)
    assert not verify(SECRET, BODY + b" ", header)
    assert not verify(b"another-secret-of-16", BODY, header)
    assert not verify(SECRET, BODY, header.replace("sha256=", "sha1="))
