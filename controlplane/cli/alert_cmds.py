"""``controlplane alerts``: alerts raised on evaluations of versions in production."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    JsonOpt,
    ProjectOpt,
    TokenOpt,
    UrlOpt,
    client,
    handle_errors,
    out,
    print_json,
)


@handle_errors
def alerts(
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    rollback_only: Annotated[
        bool, typer.Option("--rollback", help="Only alerts whose rule suggests a rollback.")
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts on production versions, newest first; act on one with `controlplane rollback`."""
    with client(url, token) as api:
        data = api.get(
            f"/v1/projects/{quote(project, safe='')}/alerts",
            rollback_suggested=True if rollback_only else None,
        )
    if as_json:
        print_json(data)
        return
    for a in data["data"]:
        hint = "  rollback suggested" if a["rollback_suggested"] else ""
        evaluation = a["evaluation"]
        out.print(
            f"seq {a['seq']}  {a['ref']}  {a['rule']['name']}: {a['metric']}={a['value']} "
            f"({a['rule']['breach']}) from evaluation/{evaluation['name']}@"
            f"{evaluation['version']}{hint}",
            markup=False,
        )
    if not data["data"]:
        out.print("no alerts")
