"""``mlflow status`` and ``mlflow reconcile``: the MLflow mirror, through the HTTP API.

``reconcile`` exits 0 when MLflow matches the ledger (nothing found, or everything found was
fixed with --fix) and 1 when it found differences that remain (drift or pending versions, not
fixed or not fixable); the usual codes otherwise (3 not allowed, 6 MLflow or server down).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    EXIT_VERIFY_FAILED,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    client,
    fail,
    handle_errors,
    out,
    print_json,
)

EXIT_DRIFT = EXIT_VERIFY_FAILED
"""``mlflow reconcile``: MLflow differs from the ledger and was not (entirely) fixed."""

mlflow_app = typer.Typer(
    help="The MLflow model registry mirror: aliases follow promotions.\n\n"
    "reconcile exits 0 when MLflow matches the ledger, 1 when differences remain."
)


def _scope(ref: str | None, project: str | None) -> dict[str, Any]:
    if ref is None:
        return {"project": project}
    kind, sep, name = ref.partition("/")
    if not sep or not name or "@" in name:
        fail(f"expected KIND/NAME, got {ref!r}")
    # like every other KIND/NAME of the CLI: in the default project unless -p says otherwise
    return {"project": project or DEFAULT_PROJECT_VALUE, "kind": kind, "name": name}


@mlflow_app.command("reconcile")
@handle_errors
def reconcile(
    ref: Annotated[
        str | None,
        typer.Argument(
            help="Only this KIND/NAME (in --project, default: default).", show_default=False
        ),
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Restore the ledger's state in MLflow.")
    ] = False,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            "-p",
            help="Only this project (default: every project; with KIND/NAME: default).",
        ),
    ] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find drift between MLflow and the ledger (aliases moved, tags changed, versions added
    in MLflow, versions still missing), record it in the ledger, and with --fix repair it.
    Foreign versions are tagged controlplane.foreign=true and kept, never deleted."""
    body = {"fix": fix, **_scope(ref, project)}
    with client(url, token) as api:
        report = api.post("/v1/integrations/mlflow/reconcile", body)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    if not report["in_sync"]:
        raise typer.Exit(EXIT_DRIFT)


def _print_report(report: dict[str, Any]) -> None:
    for item in report["items"]:
        out.print(f"{item['cause']:<8} {item['type']:<18} {_describe(item)}", markup=False)
    for change in report["changes"]:
        fields = {k: v for k, v in change.items() if k not in ("action", "model", "project")}
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        out.print(f"fixed    {change['action']:<18} {change['model']} {detail}", markup=False)
    for error in report["errors"]:
        out.print(f"error    {error['model']}: {error['error']}", markup=False)
    summary = (
        f"{report['artifacts']} models checked: {report['drift']} drifted, "
        f"{report['pending']} pending, {len(report['changes'])} changes"
    )
    if report["ledger_seqs"]:
        summary += f"; recorded at seq {', '.join(map(str, report['ledger_seqs']))}"
    state = "in sync" if report["in_sync"] else "NOT in sync (run with --fix to repair)"
    if not report["in_sync"] and report["fix"]:
        state = "NOT in sync (see errors)"
    out.print(f"{summary}; {state}", markup=False)


def _describe(item: dict[str, Any]) -> str:
    where = item["model"]
    if "alias" in item:
        where += f" alias {item['alias']}"
    if "version" in item:
        where += f" version {item['version']}"
    if "mlflow_version" in item:
        where += f" (MLflow version {item['mlflow_version']})"
    if "key_name" in item:
        where += f" tag {item['key_name']}"
    parts = [where]
    if "expected" in item:
        parts.append(f"expected {_value(item['expected'])}")
    if "actual" in item or item["type"] in ("tag_changed", "model_tag_changed"):
        parts.append(f"found {_value(item.get('actual'))}")
    if "source" in item:
        parts.append(f"source {item['source']}")
    return ", ".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, dict) and "mlflow_version" in value:
        ours = f"v{value['version']}" if value.get("version") is not None else "not ours"
        mlflow = value.get("mlflow_version")
        return f"{ours} (MLflow {mlflow if mlflow is not None else 'none yet'})"
    return "nothing" if value is None else str(value)


@mlflow_app.command("status")
@handle_errors
def status(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """Where the mirror writes, whether MLflow answers, what is pending, the last sync."""
    with client(url, token) as api:
        data = api.get("/v1/integrations/mlflow/status")
    if as_json:
        print_json(data)
        return
    if not data["enabled"]:
        out.print("MLflow mirror: off (CONTROLPLANE_MLFLOW_ENABLED=false)", markup=False)
        return
    out.print(f"MLflow mirror: registry {data['registry_uri']}", markup=False)
    reachable = {True: "reachable", False: "UNREACHABLE", None: "not contacted"}
    line = f"  MLflow {reachable[data['reachable']]}"
    if data.get("error"):
        line += f": {data['error']}"
    out.print(line, markup=False)
    pending = data["pending_versions"]
    out.print(
        f"  {data['artifacts']} models; pending versions: "
        f"{'unknown' if pending is None else pending}; queued: {data['queued']}; "
        f"retrying: {data['failed']}",
        markup=False,
    )
    last = data.get("last_sync")
    if last:
        outcome = "ok" if last["ok"] else f"failed ({last['errors'][0]['error']})"
        out.print(f"  last sync {last['at']} ({last['source']}): {outcome}", markup=False)
    else:
        out.print("  no sync since the server started", markup=False)
