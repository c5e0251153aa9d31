"""``job queue|list|show|cancel|upload``: training jobs from an engineer's command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    JsonOpt,
    ProjectOpt,
    TokenOpt,
    UrlOpt,
    client,
    fail,
    handle_errors,
    key_values,
    out,
    print_json,
)
from controlplane.registry.digests import digest_path
from controlplane.runners.sdk import RunnerClient

job_app = typer.Typer(help="Queue training jobs, follow them, cancel them, upload their inputs.")


def _summary(job: dict[str, Any]) -> str:
    inputs = ", ".join(item["ref"] for item in job["spec"]["datasets"])
    return f"job {job['id']}  {job['trainer']:<12} {job['state']:<10} on {inputs}"


def print_job(job: dict[str, Any]) -> None:
    out.print(f"[bold]job {job['id']}[/bold]  {job['trainer']}  {job['state']}")
    out.print(f"  project     {job['project']}", markup=False)
    out.print(f"  queued      {job['queued_at']} by {job['queued_by']}", markup=False)
    spec = job["spec"]
    for item in spec["datasets"]:
        out.print(f"  dataset     {item['ref']}  {item['digest']}", markup=False)
    for role in ("rubric", "base_model", "reward_model", "policy", "reference"):
        if spec.get(role):
            out.print(f"  {role:<11} {spec[role]['ref']}  {spec[role]['digest']}", markup=False)
    if spec.get("hyperparameters"):
        out.print(f"  params      {json.dumps(spec['hyperparameters'])}", markup=False)
    out.print(f"  output      {job['output']['kind']}/{job['output']['name']}", markup=False)
    if job["runner"]:
        out.print(
            f"  runner      {job['runner']} (attempt {job['attempts']}, contract "
            f"{job['contract_id']}, claim seq {job['claim_seq']})",
            markup=False,
        )
    lease = job.get("lease")
    if lease:
        progress = lease["progress"]
        fraction = progress.get("fraction")
        done = f"{fraction * 100:.0f}% " if isinstance(fraction, int | float) else ""
        done += str(progress.get("message", ""))
        out.print(f"  lease until {lease['expires_at']}  {done}", markup=False)
    if job["reason"]:
        out.print(f"  reason      {job['reason']}", markup=False)
    result = job.get("result")
    if result:
        output = result["output"]
        out.print(f"  produced    {output['ref']}  {output['digest']}", markup=False)
        for name, value in sorted(result["metrics"].items()):
            out.print(f"    {name} = {value:g}", markup=False)
        if result.get("mlflow_run_id"):
            out.print(f"  mlflow run  {result['mlflow_run_id']}", markup=False)


@job_app.command("queue")
@handle_errors
def queue(
    trainer: Annotated[str, typer.Argument(help="reward_model, dpo or evaluation.")],
    dataset: Annotated[
        list[str], typer.Option("--dataset", "-d", metavar="dataset/NAME@VERSION", help="Input.")
    ],
    rubric: Annotated[
        str | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="The rubric the data follows."),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="Model to start from (needed by dpo)."),
    ] = None,
    reward_model: Annotated[
        str | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="Judge of an evaluation job."),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(metavar="KIND/NAME@VERSION", help="Policy an evaluation job scores."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            metavar="KIND/NAME@VERSION",
            help="What an evaluation compares the policy with (or --base-model).",
        ),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Hyperparameter KEY=VALUE (repeatable).")
    ] = None,
    params_file: Annotated[
        Path | None, typer.Option(help="JSON object file of hyperparameters.")
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="Output artifact name (default TRAINER-JOBID).")
    ] = None,
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue a training job; every input is pinned by its digest now."""
    body: dict[str, Any] = {
        "trainer": trainer,
        "datasets": dataset,
        "hyperparameters": key_values(param, params_file, "--param"),
    }
    for key, value in (
        ("rubric", rubric),
        ("base_model", base_model),
        ("reward_model", reward_model),
        ("policy", policy),
        ("reference", reference),
        ("output_name", output),
    ):
        if value is not None:
            body[key] = value
    with client(url, token) as api:
        job = api.post(f"/v1/projects/{quote(project, safe='')}/jobs", body)
    if as_json:
        print_json(job)
        return
    out.print(f"queued {_summary(job)}  (ledger seq {job['id']})", markup=False)


@job_app.command("list")
@handle_errors
def list_(
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    state: Annotated[str | None, typer.Option(help="queued, claimed, succeeded, ...")] = None,
    trainer: Annotated[str | None, typer.Option(help="Only this trainer.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Jobs of a project, newest first."""
    with client(url, token) as api:
        data = api.get(
            f"/v1/projects/{quote(project, safe='')}/jobs",
            state=state,
            trainer=trainer,
            limit=limit,
        )
    if as_json:
        print_json(data)
        return
    table = Table("job", "trainer", "state", "inputs", "runner", "output")
    for job in data["data"]:
        result = job.get("result") or {}
        table.add_row(
            str(job["id"]),
            job["trainer"],
            job["state"],
            ", ".join(item["ref"] for item in job["spec"]["datasets"]),
            job["runner"] or "",
            (result.get("output") or {}).get("ref", ""),
        )
    out.print(table)
    out.print(f"{data['count']} job(s) in project {project}")


@job_app.command("show")
@handle_errors
def show(
    job_id: Annotated[int, typer.Argument(metavar="JOB", help="Job id.")],
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One job: inputs and their digests, claim, lease and progress, result or reason."""
    with client(url, token) as api:
        job = api.get(f"/v1/jobs/{job_id}")
    if as_json:
        print_json(job)
        return
    print_job(job)


@job_app.command("cancel")
@handle_errors
def cancel(
    job_id: Annotated[int, typer.Argument(metavar="JOB", help="Job id.")],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why.")] = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a queued or claimed job (who queued it, or an admin)."""
    with client(url, token) as api:
        job = api.post(f"/v1/jobs/{job_id}/cancel", {"reason": reason})
    if as_json:
        print_json(job)
        return
    out.print(f"cancelled {_summary(job)}", markup=False)


@job_app.command("upload")
@handle_errors
def upload(
    ref: Annotated[str, typer.Argument(metavar="KIND/NAME@VERSION", help="A registered version.")],
    path: Annotated[Path, typer.Argument(help="Its file or directory.", exists=True)],
    project: ProjectOpt = DEFAULT_PROJECT_VALUE,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store the bytes of a registered version on the control plane, so runners on other
    machines can fetch them (datasets and rubrics are stored when registered)."""
    kind, sep, rest = ref.partition("/")
    name, _, version = rest.partition("@")
    if not sep or not version.isdigit():
        fail(f"expected KIND/NAME@VERSION, got {ref!r}")
    resolved = path.resolve()
    local = digest_path(resolved)
    with client(url, token) as api:
        registered = api.get(
            "/v1/projects/{}/artifacts/{}/{}/versions/{}".format(
                *(quote(p, safe="") for p in (project, kind, name, version))
            )
        )
        if registered["digest"] != local:
            fail(f"{path} has digest {local}, but {ref} is {registered['digest']}")
        RunnerClient(api).upload(project, resolved)
    info = {"ref": registered["ref"], "digest": local, "path": str(resolved)}
    if as_json:
        print_json(info)
        return
    out.print(f"uploaded {info['ref']}  {local}", markup=False)
