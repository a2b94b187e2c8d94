"""What a scan reports: findings with a category the policy can block on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

# unsafe_code: a model file that can run code when loaded (or that the analyzer cannot
# follow, which counts the same); malformed: a header or layout a loader could be fooled
# by; secret / vulnerability: from Trivy.
Category = Literal["unsafe_code", "malformed", "secret", "vulnerability"]
CATEGORIES: tuple[Category, ...] = ("unsafe_code", "malformed", "secret", "vulnerability")
MAX_FINDINGS_PER_FILE = 50


@dataclass(frozen=True, slots=True)
class Finding:
    category: Category
    kind: str  # e.g. "global", "unresolved_global", "indirect_call", "lambda_layer"
    file: str  # the layer's file name, then "!member" for each archive level
    message: str
    offset: int | None = None  # byte offset in `file` (in the innermost member)
    module: str | None = None
    name: str | None = None
    severity: str = "CRITICAL"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"category": self.category, "kind": self.kind, "file": self.file,
                               "message": self.message, "severity": self.severity}
        if self.offset is not None:
            out["offset"] = self.offset
        if self.module is not None:
            out["module"] = self.module
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Finding:
        raw = doc.get("category")
        category: Category = raw if raw in CATEGORIES else "unsafe_code"
        offset = doc.get("offset")
        return cls(category=category, kind=str(doc.get("kind", "")),
                   file=str(doc.get("file", "")), message=str(doc.get("message", "")),
                   offset=offset if isinstance(offset, int) else None,
                   module=doc.get("module"), name=doc.get("name"),
                   severity=str(doc.get("severity", "CRITICAL")))

    def describe(self) -> str:
        where = f" at byte {self.offset}" if self.offset is not None else ""
        return f"{self.file}{where}: {self.message}"


class Findings:
    """Collects findings of one file, bounded so a hostile file cannot flood the report."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Finding] = []
        self.truncated = False

    def add(self, category: Category, kind: str, message: str, offset: int | None = None,
            module: str | None = None, name: str | None = None) -> None:
        if len(self.items) >= MAX_FINDINGS_PER_FILE:
            self.truncated = True
            return
        self.items.append(Finding(category, kind, self.file, message, offset, module, name))
