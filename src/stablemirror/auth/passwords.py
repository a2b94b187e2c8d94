"""Secrets at rest: argon2id for people's passwords, SHA-256 for robots' random secrets.

Robot secrets are 256 random bits, so a fast hash is as safe as a slow one for them and
keeps a CI pipeline's token requests cheap; a person's password gets argon2id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ROBOT_SCHEME = "sha256$"


class Passwords:
    def __init__(self) -> None:
        self._hasher = PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def _verify(self, stored: str | None, password: str) -> bool:
        if stored is not None and stored.startswith(ROBOT_SCHEME):
            expected = stored[len(ROBOT_SCHEME):]
            actual = hashlib.sha256(password.encode()).hexdigest()
            return hmac.compare_digest(expected, actual)
        if stored is None and self._dummy is None:
            # Verified when the user does not exist, so a miss costs what a hit costs.
            self._dummy = self._hasher.hash(secrets.token_hex(16))
        try:
            return self._hasher.verify(stored or self._dummy or "", password) and bool(stored)
        except (VerificationError, InvalidHashError):
            return False

    async def verify(self, stored: str | None, password: str) -> bool:
        # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
        return await asyncio.to_thread(self._verify, stored, password)


def new_robot_secret() -> tuple[str, str]:
    """(the secret to show once, what to store)."""
    secret = secrets.token_urlsafe(32)
    return secret, ROBOT_SCHEME + hashlib.sha256(secret.encode()).hexdigest()
