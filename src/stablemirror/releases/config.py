"""Release settings (the `releases:` section; env STABLEMIRROR_RELEASES__*)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from stablemirror.oci.patterns import longest_prefix


class RetentionSettings(BaseModel):
    enabled: bool = Field(default=False, description="run the periodic retention job here")
    keep_per_line: int = Field(default=5, ge=0,
                               description="newest versions kept per major.minor line")
    keep_days: float = Field(default=30.0, ge=0,
                             description="versions pulled this recently are kept")


class ReleaseNamespace(BaseModel):
    prefix: str = Field(default="", description="repository prefix; '' matches everything")
    version_tags_immutable: bool = Field(
        default=True, description="a SemVer tag, once pushed, never points elsewhere")
    immutable_tags: list[str] = Field(
        default_factory=list, description="fnmatch patterns of other immutable tags")
    floating_tags: bool = Field(default=True,
                                description="maintain MAJOR and MAJOR.MINOR on releases")
    channels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="admission rule per channel: '*', 'release' and pre-release prefixes")
    retention: RetentionSettings = Field(default_factory=RetentionSettings)


class ReleaseSettings(BaseModel):
    namespaces: list[ReleaseNamespace] = Field(default_factory=list)
    trusted_proxies: list[str] = Field(
        default_factory=list, description="CIDRs whose X-Forwarded-For names the client")
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    pull_flush_seconds: float = Field(default=5.0, gt=0,
                                      description="how often pull counts reach the index")

    def namespace(self, repository: str) -> ReleaseNamespace:
        """The longest matching prefix; defaults when none matches."""
        best = longest_prefix(repository, self.namespaces, lambda ns: ns.prefix)
        return best or ReleaseNamespace()
