"""Which kind of layer a file becomes (pure): the globs given for each kind, else its name.

Given globs win, in the order weight, weight.config, doc, code, dataset; a glob without `/`
also matches the base name (`*.bin` catches `sub/x.bin`), and `*` crosses directories
(fnmatch). Without a matching glob the name decides (`DEFAULT_*` below); a file no rule
knows becomes a weight if it is at least 16 MiB, else a weight config, and its layer says
`org.cncf.model.file.mediatype.untested: "true"`. Excluded: any glob of `exclude`, and
hidden files and directories (a leading `.`: `.git`, `.cache`, `.gitattributes`).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from stablemirror.models.mediatypes import KINDS, Kind

GUESS_WEIGHT_AT = 16 << 20
WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".pkl",
                   ".pickle", ".onnx", ".h5", ".keras", ".pb", ".tflite", ".msgpack",
                   ".npz", ".npy", ".mlmodel", ".engine", ".plan", ".pte", ".ggml")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".toml", ".jinja", ".tiktoken", ".model",
                   ".vocab")
CONFIG_NAMES = ("vocab.txt", "merges.txt", "added_tokens.txt", "tokenizer")
CODE_SUFFIXES = (".py", ".ipynb", ".sh", ".js", ".ts", ".go", ".rs", ".c", ".cc", ".cpp",
                 ".h", ".hpp", ".cu", ".java", ".r", ".jl", ".lua")
CODE_NAMES = ("dockerfile", "makefile", "requirements.txt")
DATASET_SUFFIXES = (".csv", ".tsv", ".parquet", ".arrow", ".jsonl", ".tfrecord",
                    ".feather", ".avro")
DOC_SUFFIXES = (".md", ".txt", ".rst", ".pdf", ".html", ".png", ".jpg", ".jpeg", ".gif",
                ".svg", ".webp")
DOC_PREFIXES = ("readme", "license", "licence", "copying", "notice", "authors",
                "changelog", "citation", "usage_policy")


@dataclass(frozen=True, slots=True)
class Selection:
    """Globs per kind (as modctl's Modelfile has) and globs to leave out."""

    globs: dict[Kind, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


def glob_matches(glob: str, path: str) -> bool:
    if fnmatch.fnmatchcase(path, glob):
        return True
    return "/" not in glob and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], glob)


def is_excluded(path: str, selection: Selection) -> bool:
    if any(part.startswith(".") for part in path.split("/")):
        return True
    return any(glob_matches(g, path) for g in selection.exclude)


def default_kind(path: str) -> Kind | None:
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(WEIGHT_SUFFIXES):
        return "weight"
    if name.endswith(CONFIG_SUFFIXES) or name in CONFIG_NAMES:
        return "weight.config"
    if name.endswith(CODE_SUFFIXES) or name in CODE_NAMES:
        return "code"
    if name.endswith(DATASET_SUFFIXES):
        return "dataset"
    if name.endswith(DOC_SUFFIXES) or name.startswith(DOC_PREFIXES):
        return "doc"
    return None


def classify(path: str, size: int, selection: Selection) -> tuple[Kind, bool]:
    """(kind, untested): untested when only the size could tell."""
    for kind in KINDS:
        if any(glob_matches(g, path) for g in selection.globs.get(kind, ())):
            return kind, False
    known = default_kind(path)
    if known is not None:
        return known, False
    return ("weight" if size >= GUESS_WEIGHT_AT else "weight.config"), True
