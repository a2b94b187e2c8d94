"""A Modelfile-like `--file` (pure): one `KEYWORD value` per line, `#` starts a comment.

    NAME all-minilm            FAMILY bert        VERSION 1.0
    LICENSE Apache-2.0         AUTHOR someone     (both repeatable)
    ARCH transformer  FORMAT safetensors  PARAMSIZE 22.7M  PRECISION fp32  QUANTIZATION awq
    VENDOR  TITLE  DESCRIPTION  DOCURL  SOURCEURL  REVISION  CREATED (RFC 3339)
    MODEL glob   CONFIG glob   DOC glob   CODE glob   DATASET glob   EXCLUDE glob

The keywords are modctl's where it has one; a value runs to the end of the line. Options on
the command line add to (lists) or override (single values) what the file says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stablemirror.models.mediatypes import Kind

SINGLE = {"NAME": "name", "FAMILY": "family", "VERSION": "version", "ARCH": "architecture",
          "FORMAT": "format", "PARAMSIZE": "param_size", "PRECISION": "precision",
          "QUANTIZATION": "quantization", "VENDOR": "vendor", "TITLE": "title",
          "DESCRIPTION": "description", "DOCURL": "doc_url", "SOURCEURL": "source_url",
          "REVISION": "revision", "CREATED": "created"}
LISTS = {"LICENSE": "licenses", "AUTHOR": "authors"}
GLOBS: dict[str, Kind | None] = {"MODEL": "weight", "WEIGHT": "weight",
                                 "CONFIG": "weight.config", "DOC": "doc", "CODE": "code",
                                 "DATASET": "dataset", "EXCLUDE": None}


class ModelfileError(ValueError):
    pass


@dataclass
class Modelfile:
    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    globs: dict[Kind, list[str]] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)


def parse_modelfile(text: str, source: str = "Modelfile") -> Modelfile:
    out = Modelfile()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if not value:
            raise ModelfileError(f"{source}:{number}: {keyword} needs a value")
        if keyword in SINGLE:
            if SINGLE[keyword] in out.values:
                raise ModelfileError(f"{source}:{number}: {keyword} given twice")
            out.values[SINGLE[keyword]] = value
        elif keyword in LISTS:
            out.lists.setdefault(LISTS[keyword], []).append(value)
        elif keyword in GLOBS:
            kind = GLOBS[keyword]
            if kind is None:
                out.exclude.append(value)
            else:
                out.globs.setdefault(kind, []).append(value)
        else:
            raise ModelfileError(f"{source}:{number}: unknown keyword {keyword!r}")
    return out
