"""Access-control settings (the `auth:` section; env STABLEMIRROR_AUTH__*)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class OidcProviderSettings(BaseModel):
    """An external OpenID Connect issuer whose ID tokens are accepted as passwords."""

    name: str = Field(description="short name; users show as NAME:USERNAME")
    issuer: str = Field(description="the `iss` value; discovery is ISSUER/.well-known/...")
    audience: str = Field(description="the `aud` the tokens must carry (our client id)")
    jwks_uri: str | None = Field(default=None, description="skip discovery, use this JWKS")
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    tag_claims: dict[str, str] = Field(
        default_factory=dict, description="principal tag -> claim, e.g. department: dept")
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    jwks_cache_seconds: float = Field(default=300.0, ge=0)


class AuthSettings(BaseModel):
    enabled: bool = Field(default=False, description="require tokens (serve --auth)")
    service: str = Field(default="stablemirror", description="token audience (`service`)")
    issuer: str = Field(default="stablemirror", description="`iss` of the tokens we sign")
    realm: str | None = Field(
        default=None, description="token endpoint URL in challenges; default: this host/token")
    token_ttl_seconds: int = Field(default=300, ge=5, le=3600,
                                   description="access token lifetime")
    refresh_ttl_seconds: int = Field(default=86400, ge=60,
                                     description="refresh (offline) token lifetime")
    key_rotation_days: float | None = Field(
        default=30.0, gt=0, description="rotate the signing key this often; None: manual only")
    key_reload_seconds: float = Field(default=10.0, gt=0,
                                      description="how often workers reload keys")
    public_repositories: list[str] = Field(
        default_factory=list, description="patterns anyone may pull, e.g. public/*")
    oidc: list[OidcProviderSettings] = Field(default_factory=list)
