"""Repository names and tags, by the distribution-spec grammar.

A name that passes `validate_name` contains only `[a-z0-9._-/]` in non-empty,
alphanumeric-bounded components, so it can never climb out of a directory.
"""

from __future__ import annotations

import re

from stablemirror.oci.digest import Digest
from stablemirror.oci.errors import ManifestInvalid, NameInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        raise NameInvalid(name=name)
    return name


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG.fullmatch(tag))  # fullmatch: `$` alone would accept a trailing "\n"


def parse_reference(reference: str) -> Digest | str:
    """A manifest reference is a digest or a tag."""
    if ":" in reference:
        return Digest.parse(reference)
    if not is_valid_tag(reference):
        raise ManifestInvalid(tag=reference, reason="invalid tag")
    return reference
