"""Access control over HTTP: the token endpoint (Docker token spec + OAuth2 form), the JWKS,
the Bearer challenge, and the authorization hook that /v2 dispatch calls after matching a
route. With auth off (no AUTH key in the app) the hook returns at once.

What a route needs: GET/HEAD pull, PUT/POST/PATCH push, DELETE delete; every upload-session
request is part of a push; the catalog needs registry-wide admin. A token lacking a needed
action gets 401 `insufficient_scope` when policy would grant it (the client fetches a fresh
token) and 403 DENIED when policy would not; anonymous callers get the 401 challenge.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from stablemirror.api.context import ACTOR_KEY, CONTEXT_KEY, context
from stablemirror.api.keys import AUDIT, AUTH, AUTH_SETTINGS
from stablemirror.auth.policy import ADMIN, DOCKER_TO_ACTION, REGISTRY_RESOURCE, repository_resource
from stablemirror.auth.principals import ANONYMOUS, Principal
from stablemirror.index.audit_events import DENIED, FAILED, OK, UNAUTHORIZED, AuditEvent
from stablemirror.oci.errors import Denied, OCIError, Unauthorized
from stablemirror.oci.names import validate_name
from stablemirror.registry.protocol import RequestContext

if TYPE_CHECKING:  # the auth service (argon2, JWT, SQL) is imported only where auth is on
    from stablemirror.auth.service import AuthService, Login
    from stablemirror.auth.tokens import Access, Claims

MOUNT_ALLOWED_KEY = "stablemirror.mount_allowed"  # False: serve a mount request as an upload
PUSH_ROUTES = ("upload_start", "upload")


@dataclass(frozen=True)
class Need:
    type: str
    name: str
    action: str  # docker action: pull | push | delete | *

    @property
    def scope(self) -> str:
        # A push challenge asks for pull too: clients push what they can then read back.
        actions = "pull,push" if self.action == "push" else self.action
        return f"{self.type}:{self.name}:{actions}"


def set_actor(request: web.Request, actor: str) -> None:
    """Name the caller for context(); replaces a RequestContext built before we knew."""
    request[ACTOR_KEY] = actor
    cached = request.get(CONTEXT_KEY)
    if isinstance(cached, RequestContext):
        request[CONTEXT_KEY] = replace(cached, actor=actor)


def needs(route: str, method: str, params: dict[str, str]) -> list[Need]:
    if route == "catalog":
        return [Need("registry", "catalog", "*")]
    name = params.get("name", "")
    if route in PUSH_ROUTES:
        return [Need("repository", name, "push")]
    if method == "DELETE":
        return [Need("repository", name, "delete")]
    if method in ("PUT", "POST", "PATCH"):
        return [Need("repository", name, "push")]
    return [Need("repository", name, "pull")]


def _action(need: Need) -> tuple[str, str]:
    if need.type == "registry":
        return ADMIN, REGISTRY_RESOURCE
    return DOCKER_TO_ACTION[need.action], repository_resource(need.name)


def realm(request: web.Request) -> str:
    configured = request.app[AUTH_SETTINGS].realm
    return configured or f"{request.scheme}://{request.host}/token"


def challenge(request: web.Request, wanted: list[Need], error: str | None = None,
              **detail: object) -> Unauthorized:
    settings = request.app[AUTH_SETTINGS]
    parts = [f'realm="{realm(request)}"', f'service="{settings.service}"']
    if wanted:
        parts.append(f'scope="{" ".join(n.scope for n in wanted)}"')
    if error:
        parts.append(f'error="{error}"')
    err = Unauthorized(**detail)
    err.headers["WWW-Authenticate"] = "Bearer " + ",".join(parts)
    return err


async def record(request: web.Request, event: AuditEvent) -> None:
    audit = request.app.get(AUDIT)
    if audit is not None:
        await audit.record(event)


def event(request: web.Request, action: str, who: str, result: str, repository: str = "",
          **detail: object) -> AuditEvent:
    ctx = context(request)
    return AuditEvent(action=action, actor=who, client=ctx.client, user_agent=ctx.user_agent,
                      request_id=ctx.request_id, repository=repository, result=result,
                      detail=detail)


async def _refuse(request: web.Request, err: OCIError, who: Principal, route: str,
                  need: Need | None, reason: str) -> OCIError:
    params = request.match_info.get("path", "")
    await record(request, event(
        request, "request.denied", who.id if who.authenticated else "",
        DENIED if err.status == 403 else UNAUTHORIZED,
        need.name if need is not None and need.type == "repository" else "",
        method=request.method, route=route, path=params, reason=reason,
        needed=need.scope if need is not None else ""))
    return err


async def _bearer(request: web.Request, auth: AuthService, route: str) -> Claims | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    from stablemirror.auth.tokens import TokenInvalid

    try:
        return await auth.bearer(value.strip())
    except TokenInvalid as err:
        raise await _refuse(request, challenge(request, [], "invalid_token", reason=err.reason),
                            ANONYMOUS, route, None, err.reason) from None


async def authorize(request: web.Request, route: str, params: dict[str, str]) -> None:
    """Raise Unauthorized / Denied unless the caller may do what `route` does."""
    auth = request.app.get(AUTH)
    if auth is None:
        return
    claims = await _bearer(request, auth, route)
    who = claims.principal if claims is not None else ANONYMOUS
    if who.authenticated:
        set_actor(request, who.id)
    if route == "base":
        if claims is None:
            raise challenge(request, [])
        return
    ctx = context(request)
    wanted = needs(route, request.method, params)
    for need in wanted:
        if claims is not None and claims.allows(need.type, need.name, need.action):
            continue
        action, resource = _action(need)
        decision = await auth.decide(who, action, resource, ctx.client, ctx.user_agent)
        if decision.allowed and claims is None:
            continue  # anonymous pull of a public namespace needs no token
        if decision.allowed or not who.authenticated:
            error = "insufficient_scope" if claims is not None else None
            raise await _refuse(request, challenge(request, wanted, error), who, route, need,
                                error or "no token")
        raise await _refuse(request, Denied(repository=need.name, action=need.action,
                                            reason=decision.explain()),
                            who, route, need, decision.explain())
    if route == "upload_start" and "mount" in request.query:
        await _check_mount(request, auth, claims, who)


async def _check_mount(request: web.Request, auth: AuthService, claims: Claims | None,
                       who: Principal) -> None:
    """A cross-repository mount reads the source: it needs pull there (automatic mounts,
    without `from`, need registry-wide admin). Without it the request becomes an upload."""
    ctx = context(request)
    source = request.query.get("from")
    if source:
        if claims is not None and claims.allows("repository", source, "pull"):
            return
        decision = await auth.decide(who, DOCKER_TO_ACTION["pull"], repository_resource(source),
                                     ctx.client, ctx.user_agent)
    else:
        decision = await auth.decide(who, ADMIN, REGISTRY_RESOURCE, ctx.client, ctx.user_agent)
    if not decision.allowed:
        request[MOUNT_ALLOWED_KEY] = False


def mount_allowed(request: web.Request) -> bool:
    return request.get(MOUNT_ALLOWED_KEY, True) is not False


# -- the token endpoint ------------------------------------------------------------------------
def basic_credentials(request: web.Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


async def _login(request: web.Request, username: str | None, password: str | None) -> Login:
    from stablemirror.auth.service import LoginFailed

    auth = request.app[AUTH]
    if username is None or password is None:
        return auth.anonymous()
    try:
        login = await auth.login(username, password)
    except LoginFailed as err:
        await record(request, event(request, "login", username, FAILED, method=err.method,
                                    reason=err.reason))
        raise Unauthorized(reason=err.reason) from None
    await record(request, event(request, "login", login.principal.id, OK, method=login.method))
    return login


def _check_service(request: web.Request, service: str | None) -> None:
    expected = request.app[AUTH_SETTINGS].service
    if service and service != expected:
        raise Unauthorized(reason="unknown service", service=service, expected=expected)


def requested_scopes(values: list[str]) -> list[Access]:
    """A repository scope must name a valid repository (NAME_INVALID, as /v2 would answer):
    the name goes into the token, the audit log and, via the challenge, a header."""
    from stablemirror.auth.tokens import parse_scopes

    scopes = parse_scopes(values)
    for access in scopes:
        if access.type == "repository":
            validate_name(access.name)
    return scopes


async def _issue(request: web.Request, login: Login, scopes: list[Access],
                 offline: bool) -> dict[str, object]:
    auth = request.app[AUTH]
    ctx = context(request)
    who = login.principal
    granted = await auth.grant(who, scopes, ctx.client, ctx.user_agent)
    token = auth.tokens.issue_access(who, granted)
    repos = [a.name for a in scopes if a.type == "repository"]
    await record(request, event(
        request, "token.grant", who.id if who.authenticated else "", OK,
        repos[0] if len(repos) == 1 else "", method=login.method,
        requested=[a.scope for a in scopes], granted=[a.scope for a in granted]))
    body: dict[str, object] = {
        "token": token, "access_token": token, "token_type": "Bearer",
        "expires_in": auth.tokens.ttl, "scope": " ".join(a.scope for a in granted),
        "issued_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if offline and who.authenticated:
        body["refresh_token"] = auth.tokens.issue_refresh(who)
    return body


async def token_get(request: web.Request) -> web.StreamResponse:
    """GET /token: Basic credentials (or none: anonymous), `service`, `scope`..."""
    _check_service(request, request.query.get("service"))
    creds = basic_credentials(request)
    if request.headers.get("Authorization") and creds is None:
        raise Unauthorized(reason="malformed Basic credentials")
    login = await _login(request, *(creds or (None, None)))
    scopes = requested_scopes(request.query.getall("scope", []))
    offline = request.query.get("offline_token", "").lower() == "true"
    return web.json_response(await _issue(request, login, scopes, offline))


async def token_post(request: web.Request) -> web.StreamResponse:
    """POST /token: the OAuth2 form, grant_type password or refresh_token."""
    from stablemirror.auth.service import LoginFailed

    form = await request.post()
    _check_service(request, str(form.get("service") or "") or None)
    grant = str(form.get("grant_type", ""))
    if grant == "password":
        login = await _login(request, str(form.get("username", "")),
                             str(form.get("password", "")))
    elif grant == "refresh_token":
        try:
            login = await request.app[AUTH].refresh(str(form.get("refresh_token", "")))
        except LoginFailed as err:
            await record(request, event(request, "login", "", FAILED, method="refresh",
                                        reason=err.reason))
            raise Unauthorized(reason=err.reason) from None
        await record(request, event(request, "login", login.principal.id, OK,
                                    method="refresh"))
    else:
        raise Unauthorized(reason="unsupported grant_type", grant_type=grant)
    scopes = requested_scopes([str(s) for s in form.getall("scope", [])])
    offline = grant == "refresh_token" or form.get("access_type") == "offline"
    return web.json_response(await _issue(request, login, scopes, offline))


async def jwks(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[AUTH].tokens.keys.jwks())


def add_token_routes(app: web.Application) -> None:
    app.router.add_get("/token", token_get)
    app.router.add_post("/token", token_post)
    app.router.add_get("/.well-known/jwks.json", jwks)
