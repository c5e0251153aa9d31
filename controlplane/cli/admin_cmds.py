"""``principal``, ``role`` and ``whoami``: identities and grants (each change is ledgered)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from rich.table import Table

from controlplane.cli.common import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    client,
    handle_errors,
    list_page,
    out,
    print_json,
)

principal_app = typer.Typer(help="Create principals (people, CI, runners) and their tokens.")
role_app = typer.Typer(help="Grant and revoke roles per project ('*' = every project).")

RoleArg = Annotated[
    str,
    typer.Argument(help="admin, engineer, approver, compliance_reviewer, runner or data_owner."),
]
RoleProjectOpt = Annotated[
    str, typer.Option("--project", "-p", help="Project, or '*' for every project.")
]


def _p(principal_id: str) -> str:
    return f"/v1/principals/{quote(principal_id, safe='')}"


def _print_principal(data: dict) -> None:
    state = "disabled" if data["disabled"] else "active"
    out.print(f"[bold]{data['id']}[/bold] ({data['kind']}, {state}) {data['display_name']}")
    for grant in data["roles"]:
        out.print(f"  {grant['role']} in {grant['project']}", markup=False)


@principal_app.command("create")
@handle_errors
def principal_create(
    principal_id: Annotated[str, typer.Argument(metavar="ID", help="Login name, e.g. alice.")],
    kind: Annotated[str, typer.Option(help="user, service or runner.")] = "user",
    display_name: Annotated[str | None, typer.Option(help="Human-readable name.")] = None,
    role: Annotated[list[str] | None, typer.Option(help="Grant ROLE or ROLE@PROJECT too.")] = None,
    with_token: Annotated[
        bool, typer.Option("--token/--no-token", help="Issue a token now.")
    ] = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a principal, optionally grant roles and issue its first token (shown once)."""
    result: dict = {}
    with client(url, token) as api:
        api.post("/v1/principals", {"id": principal_id, "kind": kind, "display_name": display_name})
        for spec in role or []:
            name, _, project = spec.partition("@")
            api.post(_p(principal_id) + "/roles", {"role": name, "project": project or "*"})
        if with_token:
            result["token"] = api.post(_p(principal_id) + "/tokens", {"name": "default"})
        result["principal"] = api.get(_p(principal_id))
    if as_json:
        print_json(result)
        return
    _print_principal(result["principal"])
    if with_token:
        out.print(f"token {result['token']['token']}  (shown once)", markup=False)


@principal_app.command("list")
@handle_errors
def principal_list(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List principals and their roles."""
    with client(url, token) as api:
        data = api.get("/v1/principals")
    if as_json:
        print_json(data)
        return
    table = Table("id", "kind", "state", "roles")
    for p in data["data"]:
        roles = ", ".join(f"{g['role']}@{g['project']}" for g in p["roles"])
        table.add_row(p["id"], p["kind"], "disabled" if p["disabled"] else "active", roles)
    out.print(table)


@principal_app.command("show")
@handle_errors
def principal_show(
    principal_id: Annotated[str, typer.Argument(metavar="ID", help="The principal.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a principal, its roles and tokens (never the secrets)."""
    with client(url, token) as api:
        data = api.get(_p(principal_id))
        data["tokens"] = api.get(_p(principal_id) + "/tokens")["data"]
    if as_json:
        print_json(data)
        return
    _print_principal(data)
    for t in data["tokens"]:
        state = "revoked" if t["revoked_at"] else f"expires {t['expires_at']}"
        out.print(f"  token {t['id']} ({t['name']}, {state})", markup=False)


@principal_app.command("disable")
@handle_errors
def principal_disable(
    principal_id: Annotated[str, typer.Argument(metavar="ID", help="The principal.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable a principal: its tokens stop working at once."""
    with client(url, token) as api:
        data = api.post(_p(principal_id) + "/disable")
    if as_json:
        print_json(data)
        return
    out.print(f"disabled {principal_id}")


@principal_app.command("token")
@handle_errors
def principal_token(
    principal_id: Annotated[str, typer.Argument(metavar="ID", help="The principal.")],
    name: Annotated[str, typer.Option(help="What the token is for, e.g. ci.")] = "default",
    expires_in_days: Annotated[
        int | None,
        typer.Option(min=1, max=3650, help="Lifetime (default: the server's, 365 days)."),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a new bearer token for a principal (shown once)."""
    with client(url, token) as api:
        data = api.post(
            _p(principal_id) + "/tokens", {"name": name, "expires_in_days": expires_in_days}
        )
    if as_json:
        print_json(data)
        return
    out.print(data["token"], markup=False)
    typer.echo(f"token id {data['id']}, expires {data['expires_at']}; shown once", err=True)


@principal_app.command("revoke-token")
@handle_errors
def principal_revoke_token(
    token_id: Annotated[str, typer.Argument(help="Token id (tok_...), not the secret.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token by its id."""
    with client(url, token) as api:
        api.delete(f"/v1/tokens/{quote(token_id, safe='')}")
    if as_json:
        print_json({"revoked": token_id})
        return
    out.print(f"revoked {token_id}")


@role_app.command("grant")
@handle_errors
def role_grant(
    principal_id: Annotated[str, typer.Argument(metavar="PRINCIPAL", help="The principal.")],
    role: RoleArg,
    project: RoleProjectOpt = "*",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant ROLE to PRINCIPAL in a project."""
    with client(url, token) as api:
        data = api.post(_p(principal_id) + "/roles", {"role": role, "project": project})
    if as_json:
        print_json(data)
        return
    out.print(f"granted {role} in {project} to {principal_id}", markup=False)


@role_app.command("revoke")
@handle_errors
def role_revoke(
    principal_id: Annotated[str, typer.Argument(metavar="PRINCIPAL", help="The principal.")],
    role: RoleArg,
    project: RoleProjectOpt = "*",
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke ROLE from PRINCIPAL in a project."""
    with client(url, token) as api:
        data = api.delete(_p(principal_id) + f"/roles/{quote(role, safe='')}", project=project)
    if as_json:
        print_json(data)
        return
    out.print(f"revoked {role} in {project} from {principal_id}", markup=False)


@role_app.command("list")
@handle_errors
def role_list(
    principal_id: Annotated[str, typer.Argument(metavar="PRINCIPAL", help="The principal.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the roles of a principal."""
    with client(url, token) as api:
        data = api.get(_p(principal_id))
    if as_json:
        print_json(list_page(data["roles"]))
        return
    for grant in data["roles"]:
        typer.echo(f"{grant['role']}\t{grant['project']}")


@handle_errors
def whoami(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Show who the token belongs to and its roles."""
    with client(url, token) as api:
        data = api.get("/v1/whoami")
    if as_json:
        print_json(data)
        return
    _print_principal(data)
