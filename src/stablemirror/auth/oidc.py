"""OIDC federation: an ID token from a configured issuer is accepted as a password.

The issuer's JWKS (found through its discovery document unless `jwks_uri` is given) is
fetched and cached for `jwks_cache_seconds`; a token signed by a key id the cache does not
know triggers one refetch (at most every REFETCH_MIN_INTERVAL), which is how an issuer's
key rotation is picked up. Users become principals named `PROVIDER:USERNAME`, with groups
and tags taken from configured claims.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt

from stablemirror.auth.config import OidcProviderSettings
from stablemirror.auth.principals import Principal
from stablemirror.auth.tokens import LEEWAY, TokenInvalid

REFETCH_MIN_INTERVAL = 10.0
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)


def looks_like_jwt(value: str) -> bool:
    parts = value.split(".")
    return len(parts) == 3 and value.startswith("eyJ")


def unverified_issuer(token: str) -> str | None:
    try:
        iss = jwt.decode(token, options={"verify_signature": False}).get("iss")
    except jwt.PyJWTError:
        return None
    return iss if isinstance(iss, str) else None


@dataclass
class _Jwks:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = 0.0  # monotonic
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class OidcVerifier:
    def __init__(self, providers: list[OidcProviderSettings],
                 session: Callable[[], aiohttp.ClientSession]) -> None:
        self.providers = {p.issuer.rstrip("/"): p for p in providers}
        self._session = session
        self._jwks: dict[str, _Jwks] = {p.issuer.rstrip("/"): _Jwks() for p in providers}

    def provider_for(self, token: str) -> OidcProviderSettings | None:
        iss = unverified_issuer(token)
        return None if iss is None else self.providers.get(iss.rstrip("/"))

    async def _get_json(self, url: str) -> dict[str, Any]:
        async with self._session().get(url, timeout=FETCH_TIMEOUT) as resp:
            resp.raise_for_status()
            doc = await resp.json(content_type=None)
        if not isinstance(doc, dict):
            raise ValueError(f"{url} did not return a JSON object")
        return doc

    async def _fetch(self, p: OidcProviderSettings, cache: _Jwks) -> None:
        uri = p.jwks_uri
        if uri is None:
            discovery = await self._get_json(
                p.issuer.rstrip("/") + "/.well-known/openid-configuration")
            uri = str(discovery["jwks_uri"])
        doc = await self._get_json(uri)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in doc.get("keys", []):
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError:
                continue  # a key type we do not use; the others still count
            keys[str(entry.get("kid", ""))] = key
        cache.keys = keys
        cache.fetched_at = time.monotonic()

    async def _key(self, p: OidcProviderSettings, kid: str) -> jwt.PyJWK | None:
        cache = self._jwks[p.issuer.rstrip("/")]
        async with cache.lock:
            age = time.monotonic() - cache.fetched_at
            stale = cache.fetched_at == 0.0 or age > p.jwks_cache_seconds
            unknown = kid not in cache.keys and age > REFETCH_MIN_INTERVAL
            if stale or unknown:
                try:
                    await self._fetch(p, cache)
                except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as err:
                    if not cache.keys:
                        raise TokenInvalid(f"issuer keys unavailable: {err}") from None
        return cache.keys.get(kid)

    async def verify(self, token: str) -> Principal:
        p = self.provider_for(token)
        if p is None:
            raise TokenInvalid("not issued by a configured OIDC provider")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise TokenInvalid(f"malformed token: {err}") from None
        if header.get("alg") not in p.algorithms:
            raise TokenInvalid(f"algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(p, str(header.get("kid", "")))
        if key is None:
            raise TokenInvalid("signed by a key the issuer does not publish")
        try:
            claims = jwt.decode(token, key, algorithms=p.algorithms, audience=p.audience,
                                issuer=p.issuer, leeway=LEEWAY,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("token is for another audience") from None
        except jwt.PyJWTError as err:
            raise TokenInvalid(f"token rejected: {err}") from None
        username = claims.get(p.username_claim) or claims["sub"]
        groups = claims.get(p.groups_claim) or []
        tags = {tag: str(claims[claim]) for tag, claim in p.tag_claims.items()
                if claim in claims}
        return Principal("user", f"{p.name}:{username}", p.name, tags,
                         tuple(str(g) for g in groups) if isinstance(groups, list) else ())
