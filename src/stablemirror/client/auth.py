"""Registry authentication: the Docker token flow (anonymous or with credentials) and Basic."""

from __future__ import annotations

import re

import aiohttp

from stablemirror.oci.errors import Unauthorized

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` -> ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


class Authenticator:
    """Answers 401 challenges; caches one Authorization header per scope."""

    def __init__(self, session: aiohttp.ClientSession,
                 credentials: tuple[str, str] | None = None) -> None:
        self.session = session
        self.credentials = credentials
        self._headers: dict[str, str] = {}

    def header(self, scope: str) -> str | None:
        return self._headers.get(scope)

    async def answer(self, challenge: str, scope: str) -> str:
        """Obtain and remember the Authorization header for `scope`; raises Unauthorized."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if self.credentials is None:
                raise Unauthorized(reason="registry wants a username and password")
            user, password = self.credentials
            value = aiohttp.BasicAuth(user, password).encode()
        elif scheme == "bearer" and params.get("realm"):
            value = "Bearer " + await self._token(params, scope)
        else:
            raise Unauthorized(reason=f"unsupported authentication challenge {challenge!r}")
        self._headers[scope] = value
        return value

    async def _token(self, params: dict[str, str], scope: str) -> str:
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        auth = aiohttp.BasicAuth(*self.credentials) if self.credentials else None
        try:
            token, _lifetime = await request_token(self.session, params["realm"], query, auth)
        except TokenRefused as e:
            raise Unauthorized(realm=params["realm"], status=e.status, reason=e.reason) from None
        return token


class TokenRefused(Exception):
    """The token endpoint gave no token: `status` its HTTP status when it answered."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason, status)
        self.reason = reason
        self.status = status


async def request_token(session: aiohttp.ClientSession, realm: str, query: dict[str, str],
                        credentials: aiohttp.BasicAuth | None) -> tuple[str, float | None]:
    """The Docker token flow's one request: GET `realm` with `query`; (token, lifetime in
    seconds when the reply says). Network errors propagate as aiohttp raises them."""
    async with session.get(realm, params=query, auth=credentials) as resp:
        if resp.status != 200:
            raise TokenRefused("token request refused", resp.status)
        try:
            doc = await resp.json(content_type=None)
        except ValueError as e:
            raise TokenRefused("token reply not JSON") from e
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenRefused("token reply without a token")
    try:
        return token, float(doc["expires_in"])
    except (KeyError, TypeError, ValueError):
        return token, None
