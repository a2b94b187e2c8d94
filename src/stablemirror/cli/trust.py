"""Command line of trust: `key generate`, `sign`, `verify`, `trust set | list | remove`.

Keys are cosign's: `key generate` writes PREFIX.key (encrypted) and PREFIX.pub, and keys
made by `cosign generate-key-pair` work unchanged. The password comes from
STABLEMIRROR_KEY_PASSWORD (or COSIGN_PASSWORD), else from a prompt; an empty one is allowed.
`sign` and `verify` talk to any OCI registry: plain HTTP for localhost and 127.0.0.0/8,
HTTPS otherwise unless `--insecure`. Registry credentials, if needed, come from
STABLEMIRROR_REGISTRY_USERNAME / STABLEMIRROR_REGISTRY_PASSWORD.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from stablemirror.cli.options import ConfigOpt, DataDirOpt
from stablemirror.client.reference import ImageReference, parse_image_reference
from stablemirror.client.registry import RegistryClient
from stablemirror.compose.commands import trust_index
from stablemirror.config import Settings, load_settings
from stablemirror.oci.errors import OCIError
from stablemirror.trust import keys as cosign_keys
from stablemirror.trust.policy import (
    MODES,
    PolicySource,
    RoleKey,
    TrustPolicy,
    check_mode,
    check_pattern,
    parse_requirement,
    read_role_key,
)
from stablemirror.trust.remote import sign_image, verify_image

PASSWORD_ENV = ("STABLEMIRROR_KEY_PASSWORD", "COSIGN_PASSWORD")

key_app = typer.Typer(help="cosign-compatible key pairs", no_args_is_help=True)
trust_app = typer.Typer(help="signing policies: which signers a repository requires",
                        no_args_is_help=True)

InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", help="plain HTTP to a registry that is not on localhost")]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def _password(confirm: bool) -> bytes:
    for name in PASSWORD_ENV:
        value = os.environ.get(name)
        if value is not None:
            return value.encode()
    value = typer.prompt("Enter password for private key", default="", hide_input=True,
                         show_default=False, confirmation_prompt=confirm)
    return str(value).encode()


def _credentials() -> tuple[str, str] | None:
    user = os.environ.get("STABLEMIRROR_REGISTRY_USERNAME")
    password = os.environ.get("STABLEMIRROR_REGISTRY_PASSWORD")
    return (user, password or "") if user else None


def _reference(text: str) -> ImageReference:
    try:
        return parse_image_reference(text)
    except OCIError as e:
        raise _fail(e.describe()) from None


def _role_keys(specs: list[str]) -> list[RoleKey]:
    """`ROLE=FILE` or just `FILE` (the role is then the file's stem)."""
    found = []
    for spec in specs:
        role, path = parse_requirement(spec) if "=" in spec else (Path(spec).stem, spec)
        try:
            found.append(read_role_key(role, path))
        except (OSError, ValueError) as e:
            raise _fail(f"public key {path}: {e}") from None
    return found


# -- keys ---------------------------------------------------------------------------------------
@key_app.command("generate")
def key_generate(
    out_prefix: Annotated[str, typer.Option("--out", help="writes PREFIX.key and PREFIX.pub")],
    force: Annotated[bool, typer.Option("--force", help="overwrite existing files")] = False,
) -> None:
    """Generate an ECDSA P-256 key pair in cosign's format."""
    private, public = Path(out_prefix + ".key"), Path(out_prefix + ".pub")
    for path in (private, public):
        if path.exists() and not force:
            raise _fail(f"{path} exists (use --force to overwrite)")
    pair = cosign_keys.generate_key_pair(_password(confirm=True))
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pair.private_pem)
    public.write_bytes(pair.public_pem)
    out.print(f"Private key written to {private}\nPublic key written to {public}\n"
              f"Key id {pair.key_id}", highlight=False)


# -- sign and verify -------------------------------------------------------------------------------
def sign(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPO[:TAG|@DIGEST]")],
    key: Annotated[Path, typer.Option("--key", help="cosign private key file")],
    identity: Annotated[str | None, typer.Option(
        help="who signs: recorded in the signed payload, shown by `verify`")] = None,
    platform: Annotated[bool, typer.Option(
        "--platform", help="platform signature: only once the developer signature verifies")
    ] = False,
    developer_key: Annotated[list[str] | None, typer.Option(
        "--developer-key", help="with --platform: developer public key(s); default: the "
        "`developer` keys of the trust policy in --config / --data-dir")] = None,
    insecure: InsecureOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Sign an image the way `cosign sign --key` does (signature tag sha256-<hex>.sig)."""
    ref = _reference(image)
    try:
        private = cosign_keys.load_private_key(key.read_bytes(), _password(confirm=False))
    except (OSError, ValueError) as e:
        raise _fail(f"private key {key}: {e}") from None
    require: list[RoleKey] = []
    if platform:
        require = (_role_keys([f"developer={p}" for p in developer_key]) if developer_key
                   else _policy_developer_keys(ref, config, data_dir))

    async def run() -> None:
        async with RegistryClient(ref.registry, insecure=insecure,
                                  credentials=_credentials()) as client:
            result = await sign_image(client, ref, private, identity=identity, require=require)
        what = "Signed" if result.added else "Already signed"
        role = "platform " if platform else ""
        out.print(f"{what} {ref.name}@{result.digest} ({role}signature"
                  f"{f' by {identity}' if identity else ''}); {result.signatures} "
                  f"signature(s) at {ref.name}:{result.tag}", highlight=False)

    try:
        asyncio.run(run())
    except OCIError as e:
        raise _fail(e.describe()) from None


def _policy_developer_keys(ref: ImageReference, config: Path | None,
                           data_dir: Path | None) -> list[RoleKey]:
    policy = asyncio.run(_policy_for(load_settings(config, data_dir=data_dir), ref.repository))
    found = [k for k in policy.keys if k.role == "developer"] if policy else []
    if not found:
        raise _fail("--platform needs the developer's public key: pass --developer-key, or "
                    "point --config/--data-dir at a server whose trust policy for "
                    f"{ref.repository} names a developer role")
    return found


def verify(
    image: Annotated[str, typer.Argument(help="REGISTRY/REPO[:TAG|@DIGEST]")],
    key: Annotated[list[str], typer.Option(
        "--key", help="public key: FILE or ROLE=FILE; repeat for several signers")],
    require: Annotated[list[str] | None, typer.Option(
        "--require", help="fail unless this role (or key) signed; default: any one")] = None,
    insecure: InsecureOpt = False,
) -> None:
    """Check an image's cosign signatures and print who signed it."""
    ref = _reference(image)
    role_keys = _role_keys(key)

    async def run() -> None:
        async with RegistryClient(ref.registry, insecure=insecure,
                                  credentials=_credentials()) as client:
            digest, verified = await verify_image(client, ref, role_keys)
        out.print(f"{ref.name}@{digest}", highlight=False)
        for v in verified:
            who = f"identity {v.identity!r}" if v.identity else "no identity claim"
            out.print(f"  verified: signed by {v.role} ({who}; key {v.key.label} "
                      f"{v.key.key_id[:19]}...)", highlight=False)
        missing = sorted(set(require or ()) - {v.role for v in verified})
        if not verified or missing:
            raise _fail("no valid signature" if not verified else
                        f"missing signature(s): {', '.join(missing)}")
        roles = ", ".join(sorted({v.role for v in verified}))
        out.print(f"{len(verified)} valid signature(s) by {roles}", highlight=False)

    try:
        asyncio.run(run())
    except OCIError as e:
        raise _fail(e.describe()) from None


# -- policies -------------------------------------------------------------------------------------
async def _policy_for(settings: Settings, repository: str) -> TrustPolicy | None:
    async with trust_index(settings) as index:
        return await PolicySource(index, _config_policies(settings)).for_repository(repository)


def _config_policies(settings: Settings) -> list[TrustPolicy]:
    from stablemirror.compose.trust import config_policies

    try:
        return config_policies(settings)
    except (OSError, ValueError) as e:
        raise _fail(f"trust policy in the config file: {e}") from None


@trust_app.command("set")
def trust_set(
    pattern: Annotated[str, typer.Argument(help="repository pattern (fnmatch), e.g. 'models/*'")],
    require: Annotated[list[str], typer.Option(
        "--require", help="ROLE=PUBLIC_KEY_FILE; repeat per role and per key")],
    mode: Annotated[str, typer.Option(help=f"{' | '.join(MODES)}")] = "enforce",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create or replace the policy of PATTERN; running servers apply it within seconds."""
    try:
        check_pattern(pattern)
        check_mode(mode)
        for spec in require:
            parse_requirement(spec)  # ROLE=FILE, always
        rows = [k.row() for k in _role_keys(require)]
    except ValueError as e:
        raise _fail(str(e)) from None
    settings = load_settings(config, data_dir=data_dir)

    async def run() -> None:
        async with trust_index(settings) as index:
            await index.set_policy(pattern, mode, rows)

    asyncio.run(run())
    roles = sorted({r.role for r in rows})
    out.print(f"policy {pattern}: {mode}, requires {', '.join(roles)}", highlight=False)


@trust_app.command("remove")
def trust_remove(
    pattern: Annotated[str, typer.Argument(help="the pattern given to `trust set`")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Remove a policy set with `trust set` (config-file policies stay)."""
    settings = load_settings(config, data_dir=data_dir)

    async def run() -> bool:
        async with trust_index(settings) as index:
            return await index.delete_policy(pattern)

    if not asyncio.run(run()):
        raise _fail(f"no policy {pattern!r} in the index")
    out.print(f"policy {pattern} removed", highlight=False)


@trust_app.command("list")
def trust_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Policies in effect: from the index (`trust set`) and the config file."""
    settings = load_settings(config, data_dir=data_dir)

    async def run() -> list[TrustPolicy]:
        async with trust_index(settings) as index:
            return await PolicySource(index, _config_policies(settings)).policies()

    table = Table(title="trust policies")
    for column in ("pattern", "mode", "role", "keys", "source"):
        table.add_column(column)
    for policy in sorted(asyncio.run(run()), key=lambda p: p.pattern):
        for role in policy.roles or ["-"]:
            keys = [f"{k.label} ({k.key_id[:19]}...)" for k in policy.keys if k.role == role]
            table.add_row(policy.pattern, policy.mode, role, "\n".join(keys), policy.source)
    out.print(table)
