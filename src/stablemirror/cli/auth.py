"""Command line of access control: `user`, `robot`, `role`, `policy`, `auth`.

Every command works on a data dir (`--data-dir` / `--config`) or on a running server
(`--url`, with `--username` and STABLEMIRROR_PASSWORD); see admin_client.py.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stablemirror.cli.admin_client import CliError, backend
from stablemirror.cli.options import ConfigOpt, DataDirOpt, UrlOpt, UserOpt

user_app = typer.Typer(help="local users (argon2 passwords, tags, roles)", no_args_is_help=True)
robot_app = typer.Typer(help="robot accounts: scoped, expirable, revocable", no_args_is_help=True)
role_app = typer.Typer(help="role bindings: admin, maintainer, developer, reader",
                       no_args_is_help=True)
policy_app = typer.Typer(help="IAM-style policy documents", no_args_is_help=True)
auth_app = typer.Typer(help="token signing keys", no_args_is_help=True)

TagOpt = Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable")]
GroupOpt = Annotated[list[str] | None, typer.Option("--group", help="repeatable")]
RoleOpt = Annotated[list[str] | None, typer.Option("--role", help="admin|maintainer|developer|"
                                                   "reader; pairs with --repos")]
ReposOpt = Annotated[list[str] | None, typer.Option("--repos", help="repository pattern, "
                                                    "e.g. team/*; one per --role")]
console = Console(soft_wrap=True)  # long explanations stay on one line
MIN_PASSWORD_LENGTH = 8  # what auth/admin.py accepts; said up front, in help and prompt
PasswordStdinOpt = Annotated[bool, typer.Option(
    "--password-stdin", help=f"read the password (at least {MIN_PASSWORD_LENGTH} characters) "
    "from the first line of stdin")]


def run(data_dir: Path | None, config: Path | None, url: str | None, username: str,
        op: str, **args: Any) -> Any:
    async def go() -> Any:
        async with backend(data_dir, config, url, username) as b:
            return await b.call(op, **args)
    try:
        return asyncio.run(go())
    except CliError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


def show(result: Any) -> None:
    console.print_json(json.dumps(result))


def parse_tags(tags: list[str] | None) -> dict[str, str]:
    out = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE", param_hint="--tag")
        out[key] = value
    return out


def parse_roles(roles: list[str] | None, repos: list[str] | None) -> list[tuple[str, str]]:
    roles, repos = roles or [], repos or []
    if len(roles) != len(repos):
        raise typer.BadParameter("give one --repos PATTERN for each --role", param_hint="--role")
    return list(zip(roles, repos, strict=True))


def read_password(from_stdin: bool, confirm: bool = True) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"password (at least {MIN_PASSWORD_LENGTH} characters): ")
        if confirm and getpass.getpass("again: ") != password:
            raise typer.BadParameter("the passwords differ")
    if len(password) < MIN_PASSWORD_LENGTH:
        console.print(f"[red]error:[/red] password: must be at least {MIN_PASSWORD_LENGTH} "
                      f"characters (got {len(password)})")
        raise typer.Exit(2)
    return password


# -- users -----------------------------------------------------------------------------------
@user_app.command("add")
def user_add(name: str, tag: TagOpt = None, group: GroupOpt = None, role: RoleOpt = None,
             repos: ReposOpt = None,
             password_stdin: PasswordStdinOpt = False,
             data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
             username: UserOpt = "admin") -> None:
    """Create a user: `user add alice --tag department=AI --role reader --repos team/*`.

    The password (prompted for, or --password-stdin) needs at least 8 characters."""
    roles, tags = parse_roles(role, repos), parse_tags(tag)
    show(run(data_dir, config, url, username, "add_user", name=name,
             password=read_password(password_stdin), tags=tags, groups=group or [],
             roles=roles))


@user_app.command("set")
def user_set(name: str, tag: TagOpt = None, group: GroupOpt = None,
             password_stdin: PasswordStdinOpt = False,
             disable: Annotated[bool | None, typer.Option("--disable/--enable")] = None,
             data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
             username: UserOpt = "admin") -> None:
    """Change a user's password (--password-stdin), tags (replaced), groups or state."""
    show(run(data_dir, config, url, username, "update_user", name=name,
             password=read_password(True) if password_stdin else None,
             tags=parse_tags(tag) if tag else None, groups=group, disabled=disable))


@user_app.command("delete")
def user_delete(name: str, data_dir: DataDirOpt = None, config: ConfigOpt = None,
                url: UrlOpt = None, username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "delete_user", name=name))


@user_app.command("list")
def user_list(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
              username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "list", kind="user"))


# -- robots ----------------------------------------------------------------------------------
@robot_app.command("create")
def robot_create(name: str, role: RoleOpt = None, repos: ReposOpt = None,
                 expires_days: Annotated[float | None, typer.Option(
                     "--expires-days", help="expire after this many days")] = None,
                 description: Annotated[str, typer.Option("--description")] = "",
                 data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
                 username: UserOpt = "admin") -> None:
    """Create a robot; prints its login (robot+NAME) and secret, shown this once."""
    show(run(data_dir, config, url, username, "create_robot", name=name,
             roles=parse_roles(role, repos), expires_in_days=expires_days,
             description=description))


@robot_app.command("revoke")
def robot_revoke(name: str, data_dir: DataDirOpt = None, config: ConfigOpt = None,
                 url: UrlOpt = None, username: UserOpt = "admin") -> None:
    """Revoke a robot: its next request fails, whatever token it holds."""
    show(run(data_dir, config, url, username, "revoke_robot", name=name))


@robot_app.command("list")
def robot_list(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
               username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "list", kind="robot"))


# -- role bindings ---------------------------------------------------------------------------
def _principal(user: str | None, robot: str | None, group: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("user", user), ("robot", robot), ("group", group)) if v]
    if len(given) != 1:
        raise typer.BadParameter("name exactly one of --user, --robot, --group")
    return given[0]


@role_app.command("bind")
def role_bind(role: Annotated[str, typer.Option("--role")],
              repos: Annotated[str, typer.Option("--repos")],
              user: Annotated[str | None, typer.Option("--user")] = None,
              robot: Annotated[str | None, typer.Option("--robot")] = None,
              group: Annotated[str | None, typer.Option("--group")] = None,
              unbind: Annotated[bool, typer.Option("--remove", help="unbind instead")] = False,
              data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
              username: UserOpt = "admin") -> None:
    """Bind (or --remove) a role for a user, robot or group on a repository pattern."""
    kind, name = _principal(user, robot, group)
    show(run(data_dir, config, url, username, "unbind" if unbind else "bind",
             principal_kind=kind, principal=name, role=role, repositories=repos))


@role_app.command("list")
def role_list(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
              username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "bindings"))


# -- policies --------------------------------------------------------------------------------
@policy_app.command("apply")
def policy_apply(file: Path, name: Annotated[str | None, typer.Option(
                     "--name", help="default: the file name without .json")] = None,
                 data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
                 username: UserOpt = "admin") -> None:
    """Create or replace a policy document (validated first; errors name the field)."""
    try:
        document = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise typer.BadParameter(f"{file}: {err}") from None
    show(run(data_dir, config, url, username, "apply_policy", name=name or file.stem,
             document=document))


@policy_app.command("delete")
def policy_delete(name: str, data_dir: DataDirOpt = None, config: ConfigOpt = None,
                  url: UrlOpt = None, username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "delete_policy", name=name))


@policy_app.command("list")
def policy_list(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
                username: UserOpt = "admin") -> None:
    show(run(data_dir, config, url, username, "policies"))


@policy_app.command("test")
def policy_test(action: Annotated[str, typer.Option("--action")],
                resource: Annotated[str, typer.Option("--resource")],
                user: Annotated[str | None, typer.Option("--user")] = None,
                robot: Annotated[str | None, typer.Option("--robot")] = None,
                anonymous: Annotated[bool, typer.Option("--anonymous")] = False,
                tag: TagOpt = None, group: GroupOpt = None,
                source_ip: Annotated[str, typer.Option("--source-ip")] = "",
                as_json: Annotated[bool, typer.Option("--json")] = False,
                data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
                username: UserOpt = "admin") -> None:
    """Would this be allowed, and which statement decides? Exit 0 allowed, 1 denied."""
    if anonymous:
        kind, name = "anonymous", ""
    else:
        kind, name = _principal(user, robot, None)
    result = run(data_dir, config, url, username, "test_policy", kind=kind, name=name,
                 action=action, resource=resource, client=source_ip, tags=parse_tags(tag),
                 groups=group or [])
    if as_json:
        show(result)
    else:
        verdict = "[green]ALLOW[/green]" if result["allowed"] else "[red]DENY[/red]"
        console.print(f"{verdict} {result['explanation']}")
        if result.get("statement"):
            console.print_json(json.dumps(result["statement"]))
    raise typer.Exit(0 if result["allowed"] else 1)


@auth_app.command("rotate-key")
def rotate_key(data_dir: DataDirOpt = None, config: ConfigOpt = None, url: UrlOpt = None,
               username: UserOpt = "admin") -> None:
    """Start signing tokens with a new key; older keys verify until their tokens expire."""
    show(run(data_dir, config, url, username, "rotate_key"))
