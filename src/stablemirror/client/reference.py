"""Image references `REGISTRY/REPO[:TAG|@DIGEST]` and how to reach their registry."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import NameInvalid
from stablemirror.oci.names import is_valid_tag, validate_name


@dataclass(frozen=True, slots=True)
class ImageReference:
    registry: str  # host[:port]
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def name(self) -> str:
        """registry/repository: what cosign puts in `docker-reference`."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """The manifest reference to ask the registry for (digest beats tag)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"


def parse_image_reference(text: str) -> ImageReference:
    """Parse `REGISTRY/REPO[:TAG|@DIGEST]`; the registry part is required."""
    registry, sep, rest = text.strip().partition("/")
    if not sep or not registry or not rest:
        raise NameInvalid(reference=text, reason="expected REGISTRY/REPO[:TAG|@DIGEST]")
    digest: Digest | None = None
    tag: str | None = None
    if "@" in rest:
        rest, _, digest_text = rest.partition("@")
        digest = Digest.parse(digest_text)
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not is_valid_tag(tag):
            raise NameInvalid(reference=text, reason="invalid tag")
    validate_name(rest)
    return ImageReference(registry, rest, tag, digest)


def host_of(registry: str) -> str:
    if registry.startswith("["):
        return registry[1:].partition("]")[0]
    host, sep, port = registry.rpartition(":")
    return host if sep and port.isdigit() else registry


def is_loopback(registry: str) -> bool:
    """localhost, 127.0.0.0/8 and ::1 are spoken to over plain HTTP, as docker does."""
    host = host_of(registry)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(registry: str, insecure: bool = False) -> str:
    scheme = "http" if insecure or is_loopback(registry) else "https"
    return f"{scheme}://{registry}"
