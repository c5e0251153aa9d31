"""``controlplane``: the command line of the governance and audit control plane.

Server commands (init, serve) work on the data directory; every other command is a client of
the HTTP API (CONTROLPLANE_URL, CONTROLPLANE_TOKEN). Every command takes --json.
"""

from __future__ import annotations

import typer

from controlplane import __version__
from controlplane.cli import (
    admin_cmds,
    alert_cmds,
    contract_cmds,
    demo_cmds,
    governance_cmds,
    job_cmds,
    ledger_cmds,
    mlflow_cmds,
    registry_cmds,
    runner_cmds,
    server_cmds,
    serverkey_cmds,
)
from controlplane.cli.errors import OneLineErrorGroup

app = typer.Typer(
    name="controlplane",
    cls=OneLineErrorGroup,
    help="Governance and audit control plane for RLHF and preference-optimization pipelines."
    "\n\nExit codes: 0 success; 1 verification failed; 2 bad usage or invalid input; "
    "3 not authenticated or not allowed; 4 not found; 5 conflict; "
    "6 server unreachable or server error.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"controlplane {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Governance and audit control plane."""


app.command("init")(server_cmds.init)
app.command("serve")(server_cmds.serve)
app.add_typer(serverkey_cmds.server_key_app, name="server-key")
app.command("demo")(demo_cmds.demo)
app.command("register")(registry_cmds.register)
app.command("show")(registry_cmds.show)
app.command("list")(registry_cmds.list_)
app.command("lineage")(registry_cmds.lineage)
app.command("log")(ledger_cmds.log)
app.command("checkpoint")(ledger_cmds.checkpoint)
app.command("export")(ledger_cmds.export)
app.command("verify")(ledger_cmds.verify)
app.add_typer(ledger_cmds.proof_app, name="proof")
app.add_typer(admin_cmds.principal_app, name="principal")
app.add_typer(admin_cmds.role_app, name="role")
app.command("whoami")(admin_cmds.whoami)
app.add_typer(governance_cmds.keys_app, name="keys")
app.command("request")(governance_cmds.request)
app.command("requests")(governance_cmds.requests)
app.command("approve")(governance_cmds.approve)
app.command("reject")(governance_cmds.reject)
app.command("withdraw")(governance_cmds.withdraw)
app.command("rollback")(governance_cmds.rollback)
app.command("retire")(governance_cmds.retire)
app.command("status")(governance_cmds.status)
app.command("alerts")(alert_cmds.alerts)
app.add_typer(mlflow_cmds.mlflow_app, name="mlflow")
app.add_typer(contract_cmds.contract_app, name="contract")
app.add_typer(contract_cmds.annotator_app, name="annotator")
app.add_typer(job_cmds.job_app, name="job")
app.add_typer(runner_cmds.runner_app, name="runner")

if __name__ == "__main__":
    app()
