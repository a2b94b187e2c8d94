"""Token signing keys (ES256, P-256), kept in the index so every worker and replica shares
them. The newest unretired key signs; all unretired keys verify and are published at the
JWKS endpoint, so a rotation never invalidates a token signed just before it."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import Connection, select, update

from stablemirror.index.db import Database
from stablemirror.index.schema_auth import auth_keys, auth_state

RELOAD_MIN_INTERVAL = 1.0  # an unknown kid reloads the ring at most this often


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    created_at: float

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()

    def jwk(self) -> dict[str, str]:
        numbers = self.public.public_numbers()

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

        return {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y),
                "kid": self.kid, "use": "sig", "alg": "ES256"}


def _new_key_row(now: float) -> dict[str, object]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return {"kid": hashlib.sha256(der).hexdigest()[:16], "private_pem": pem,
            "created_at": now, "retired_at": None}


def _lock_state(conn: Connection) -> None:
    conn.execute(select(auth_state.c.version).where(auth_state.c.id == 1).with_for_update())


def _bump(conn: Connection) -> None:
    conn.execute(update(auth_state).where(auth_state.c.id == 1)
                 .values(version=auth_state.c.version + 1))


def rotate(conn: Connection, grace_seconds: float, now: float | None = None) -> str:
    """Add a new signing key; retire keys superseded more than `grace_seconds` ago."""
    now = time.time() if now is None else now
    _lock_state(conn)
    row = _new_key_row(now)
    conn.execute(auth_keys.insert().values(**row))
    live = conn.execute(select(auth_keys.c.kid, auth_keys.c.created_at)
                        .where(auth_keys.c.retired_at.is_(None))
                        .order_by(auth_keys.c.created_at)).all()
    for (kid, _created), (_next_kid, successor_at) in itertools.pairwise(live):
        if now - successor_at > grace_seconds:
            conn.execute(update(auth_keys).where(auth_keys.c.kid == kid)
                         .values(retired_at=now, private_pem=""))
    _bump(conn)
    return str(row["kid"])


def ensure(conn: Connection, rotate_after: float | None, grace_seconds: float) -> None:
    """Create the first key, or rotate when the signing key is older than `rotate_after`."""
    _lock_state(conn)  # several workers start at once: one of them creates the key
    newest = conn.execute(select(auth_keys.c.created_at)
                          .where(auth_keys.c.retired_at.is_(None))
                          .order_by(auth_keys.c.created_at.desc()).limit(1)).scalar()
    if newest is None or (rotate_after is not None and time.time() - newest > rotate_after):
        rotate(conn, grace_seconds)


class KeyRing:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._keys: dict[str, SigningKey] = {}
        self._active: SigningKey | None = None
        self._loaded_at = 0.0

    async def load(self) -> None:
        rows = await self.db.read(lambda c: c.execute(
            select(auth_keys.c.kid, auth_keys.c.private_pem, auth_keys.c.created_at)
            .where(auth_keys.c.retired_at.is_(None)).order_by(auth_keys.c.created_at)).all())
        keys: dict[str, SigningKey] = {}
        for kid, pem, created in rows:
            private = serialization.load_pem_private_key(pem.encode(), password=None)
            if isinstance(private, ec.EllipticCurvePrivateKey):
                keys[kid] = SigningKey(kid, private, created)
        self._keys = keys
        self._active = max(keys.values(), key=lambda k: k.created_at, default=None)
        self._loaded_at = time.monotonic()

    @property
    def active(self) -> SigningKey:
        if self._active is None:
            raise RuntimeError("no token signing key: the key ring was not loaded")
        return self._active

    async def public_key(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > RELOAD_MIN_INTERVAL:
            await self.load()  # another worker may have rotated
            key = self._keys.get(kid)
        return None if key is None else key.public

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [k.jwk() for k in self._keys.values()]}
