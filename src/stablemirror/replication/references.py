"""skopeo-style transport references: `docker://HOST/REPO[:TAG|@DIGEST]`, `oci:DIR[:REF]`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from stablemirror.client.reference import ImageReference, parse_image_reference
from stablemirror.oci.errors import NameInvalid


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An OCI image layout directory and the tag (`org.opencontainers.image.ref.name`) or
    digest in it; `reference` None means every tag of the layout's index.json."""

    directory: Path
    reference: str | None = None

    def __str__(self) -> str:
        return f"oci:{self.directory}" + (f":{self.reference}" if self.reference else "")


_DIGEST_TAIL = re.compile(r":((?:sha256|sha512):[0-9a-f]{64,128})$")
TransportReference = ImageReference | LayoutReference


def parse_transport(text: str) -> TransportReference:
    if text.startswith("docker://"):
        return parse_image_reference(text.removeprefix("docker://"))
    if text.startswith("oci:"):
        rest = text.removeprefix("oci:")
        by_digest = _DIGEST_TAIL.search(rest)
        if by_digest:
            return LayoutReference(Path(rest[:by_digest.start()]), by_digest.group(1))
        directory, sep, ref = rest.rpartition(":")
        if sep and directory and ref and "/" not in ref:
            return LayoutReference(Path(directory), ref)
        if not rest:
            raise NameInvalid(reference=text, reason="oci: needs a directory")
        return LayoutReference(Path(rest))
    raise NameInvalid(reference=text,
                      reason="expected docker://HOST/REPO[:TAG|@DIGEST] or oci:DIR[:TAG]")
