"""`stablemirror scan FILE | HOST/REPO:TAG`: the model-file analyzers from the command line
(a local file, or every blob of an image, downloaded and verified one at a time), and
`stablemirror scan-exempt`: record a signed exemption for one manifest."""

from __future__ import annotations

import asyncio
import getpass
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stablemirror.client.reference import parse_image_reference
from stablemirror.client.registry import RegistryClient
from stablemirror.compose.auth import build_audit
from stablemirror.config import load_settings
from stablemirror.index.audit_events import OK, AuditEvent
from stablemirror.index.db import Database
from stablemirror.index.migrate import upgrade
from stablemirror.oci.errors import OCIError
from stablemirror.oci.manifest import parse_manifest
from stablemirror.scanning.allowlist import Allowlist
from stablemirror.scanning.analyze import Analyzer
from stablemirror.scanning.exemptions import sign_exemption
from stablemirror.scanning.findings import Finding
from stablemirror.scanning.jobs import layer_name
from stablemirror.scanning.store import ScanStore
from stablemirror.trust import keys as cosign_keys

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

AllowOpt = Annotated[list[str] | None, typer.Option(
    "--allow-global", help="extra pickle global to accept (module.name or module.*)")]
InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="plain HTTP to a registry that is not on localhost")]


def _table(findings: list[Finding]) -> Table:
    table = Table(title=f"{len(findings)} finding(s)")
    for column in ("category", "kind", "file", "offset", "finding"):
        table.add_column(column, overflow="fold")
    for f in findings:
        table.add_row(f.category, f.kind, f.file, "" if f.offset is None else str(f.offset),
                      f.message)
    return table


async def _scan_image(target: str, insecure: bool, analyzer: Analyzer) -> list[Finding]:
    ref = parse_image_reference(target)
    findings: list[Finding] = []
    async with RegistryClient(ref.registry, insecure=insecure) as client:
        todo = [str(ref.digest or ref.tag or "latest")]
        seen: set[str] = set()
        while todo and len(seen) < 64:
            reference = todo.pop()
            fetched = await client.get_manifest(ref.repository, reference)
            seen.add(str(fetched.digest))
            manifest = parse_manifest(fetched.content, fetched.media_type)
            todo += [str(c.digest) for c in manifest.children if str(c.digest) not in seen]
            for blob in manifest.blobs:
                with tempfile.TemporaryFile() as f:
                    await client.download_blob(ref.repository, blob.digest, f)
                    f.seek(0)
                    findings += await asyncio.to_thread(analyzer.analyze, f, layer_name(blob))
    return findings


def scan(
    target: Annotated[str, typer.Argument(help="a local file, or HOST/REPO:TAG / @DIGEST")],
    allow_global: AllowOpt = None,
    insecure: InsecureOpt = False,
) -> None:
    """Analyze model files without loading them; exit 1 when anything is found."""
    analyzer = Analyzer(Allowlist(allow_global or []))
    path = Path(target)
    if path.exists():
        with path.open("rb") as f:
            findings = analyzer.analyze(f, path.name)
    else:
        try:
            findings = asyncio.run(_scan_image(target, insecure, analyzer))
        except OCIError as e:
            err.print(f"[red]error:[/red] {e.describe()}", highlight=False)
            raise typer.Exit(2) from None
    if not findings:
        out.print(f"{target}: no findings", highlight=False)
        return
    out.print(_table(findings))
    raise typer.Exit(1)


def scan_exempt(
    target: Annotated[str, typer.Argument(help="REPO@sha256:... (a manifest digest)")],
    key: Annotated[Path, typer.Option("--key", help="cosign-format private key")],
    reason: Annotated[str, typer.Option("--reason", help="why this is safe to serve")],
    kinds: Annotated[list[str] | None, typer.Option(
        "--kind", help="finding kind accepted (repeatable; default: any)")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
) -> None:
    """Sign and record an exemption: the server then serves this manifest despite its
    findings, if the key is one of `scanning.exemption_keys`."""
    repository, sep, digest = target.partition("@")
    if not sep or not digest.startswith("sha256:"):
        err.print("error: expected REPO@sha256:<hex>")
        raise typer.Exit(2)
    password = os.environ.get("STABLEMIRROR_KEY_PASSWORD", os.environ.get("COSIGN_PASSWORD"))
    if password is None:
        password = getpass.getpass("Enter password for private key: ")
    try:
        private = cosign_keys.load_private_key(key.read_bytes(), password.encode())
    except (OSError, ValueError) as e:
        err.print(f"error: cannot load {key}: {e}")
        raise typer.Exit(1) from None
    settings = load_settings(config, data_dir=data_dir)
    actor = os.environ.get("USER", "unknown")
    exemption = sign_exemption(private, repository, digest, actor, reason, kinds or ["*"])

    async def run() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.index_url)
        db = Database(settings.index_url)
        try:
            await ScanStore(db).put_exemption(exemption)
            audit = build_audit(settings, db)
            if audit is not None:
                await audit.record(AuditEvent(
                    action="scan.exemption", actor=f"cli:{actor}", client="local",
                    repository=repository, digest=digest, result=OK,
                    detail={"reason": reason, "kinds": kinds or ["*"],
                            "key": exemption.key_id}))
        finally:
            await db.close()
    asyncio.run(run())
    out.print(f"exempted {repository}@{digest} (key {exemption.key_id})", highlight=False)
