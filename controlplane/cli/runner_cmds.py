"""``runner start``: poll, claim under a data contract, train, report (with a progress bar).

The progress bar is drawn on stderr, so ``--json`` output on stdout stays clean. Ctrl-C stops
gracefully: a job in progress is released (``job.released`` in the ledger) and goes back to
the queue at once. SIGTERM (``kill``, ``docker stop``, systemd) stops it the same way.

Exit codes: 0 done (with ``--once``: the job succeeded); 1 the job failed (for example its
input bytes did not match their digests); 3 a contract was refused; 4 ``--once`` took no job
before ``--max-idle``; 5 the claim was lost (lease expired, job cancelled); 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from controlplane.cli.common import (
    DEFAULT_PROJECT_VALUE,
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_NOT_FOUND,
    EXIT_VERIFY_FAILED,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    client,
    err,
    fail,
    handle_errors,
    print_json,
    read_json,
)
from controlplane.config import Settings
from controlplane.runners.runner import Outcome, Runner, RunnerConfig
from controlplane.runners.sdk import ContractRefused, Presented, RunnerClient

runner_app = typer.Typer(help="Run training jobs on this machine as a runner principal.")

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what shells report for a terminated process


class _Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the interrupt the runner already handles by releasing its job."""


@contextmanager
def _sigterm_stops_gracefully() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`_Terminated` in the main thread.

    Without it a stopped container or service lost its job until the lease expired (the
    default SIGTERM action ends the process with no release). Signal handlers can only be set
    from the main thread; elsewhere (an embedding application) nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(_signum: int, _frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Bar:
    """Runner events drawn as a rich progress bar on stderr."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.task: TaskID | None = None
        self.waiting = False

    def idle(self) -> None:
        if not self.waiting:
            err.print("waiting for jobs ...", markup=False)
            self.waiting = True

    def claimed(self, job: Mapping[str, Any]) -> None:
        self.waiting = False
        datasets = ", ".join(item["ref"] for item in job["spec"]["datasets"])
        err.print(
            f"claimed job {job['id']} ({job['trainer']} on {datasets}) under contract "
            f"{job['contract_id']}",
            markup=False,
        )
        if self.progress is not None:
            self.task = self.progress.add_task(f"job {job['id']}", total=1.0)

    def step(self, job: Mapping[str, Any], fraction: float, message: str) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(
                self.task,
                completed=max(0.0, min(1.0, fraction)),
                description=f"job {job['id']} {message[:60]}",
            )

    def done(self, outcome: Outcome) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        err.print(f"job {outcome.job_id} {outcome.state}: {outcome.detail}", markup=False)

    def notice(self, message: str) -> None:
        err.print(message, markup=False)


def _contract(value: str) -> Presented:
    """A contract file (a DSSE envelope, or JSON holding one under ``envelope``), or an id."""
    path = Path(value)
    if path.is_file():
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("envelope"), dict):
            data = data["envelope"]
        if not isinstance(data, dict):
            raise ValueError(f"{value} does not hold a DSSE envelope")
        return data
    return value


@runner_app.command("start")
@handle_errors
def start(
    contract: Annotated[
        list[str],
        typer.Option(
            "--contract",
            "-c",
            help="Data contract to present: a file with its DSSE envelope, or a registered "
            "contract id (repeatable).",
        ),
    ],
    project: Annotated[
        list[str] | None,
        typer.Option(
            "--project",
            "-p",
            envvar="CONTROLPLANE_PROJECT",
            help="Project to take jobs from (repeatable; default: default).",
            show_default=False,
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between polls when idle.")
    ] = 5.0,
    once: Annotated[bool, typer.Option("--once", help="Take one job, then exit.")] = False,
    max_idle: Annotated[
        float | None,
        typer.Option(min=0, help="Exit after this many seconds without a job.", show_default=False),
    ] = None,
    lease_seconds: Annotated[
        int | None,
        typer.Option(min=5, max=86_400, help="Lease to ask for (default: the server's)."),
    ] = None,
    trainer: Annotated[
        list[str] | None, typer.Option(help="Only these trainers (repeatable).")
    ] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(
            help="Inputs and outputs of jobs (default DATA_DIR/runner).", show_default=False
        ),
    ] = None,
    mlflow_tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="Record each training run in MLflow here (default: CONTROLPLANE_MLFLOW_"
            "TRACKING_URI or MLFLOW_TRACKING_URI if set; else no MLflow run).",
            show_default=False,
        ),
    ] = None,
    upload: Annotated[
        bool, typer.Option("--upload/--no-upload", help="Upload outputs to the control plane.")
    ] = True,
    progress_bar: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Draw a progress bar on stderr.")
    ] = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Poll for jobs, claim them with a data contract, fetch and check the inputs, train,
    and report the outputs (registered with lineage) or the failure.

    Ctrl-C or SIGTERM releases the job in progress (exit 130 or 143). With --once the exit
    code says how the job went:
    0 succeeded, 1 failed (the reason is recorded), 3 the contract was refused, 4 no job the
    contract covers was queued, 5 the lease was lost.
    """
    settings = Settings()
    config = RunnerConfig(
        projects=project or [DEFAULT_PROJECT_VALUE],
        contracts=[_contract(value) for value in contract],
        work_dir=(work_dir or settings.runner_work_dir or settings.data_dir / "runner").resolve(),
        poll_interval=poll_interval,
        lease_seconds=lease_seconds,
        trainers=trainer,
        mlflow_tracking_uri=mlflow_tracking_uri or settings.mlflow_tracking_uri,
        upload_outputs=upload,
    )
    progress = (
        Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        if progress_bar and err.is_terminal  # rich leaves a newline where it cannot erase
        else None
    )
    outcomes: list[Outcome] = []
    code = 0
    with client(url, token) as api:
        runner = Runner(RunnerClient(api), config, _Bar(progress))
        try:
            if progress is not None:
                progress.start()
            with _sigterm_stops_gracefully():
                outcomes = runner.run(once=once, max_idle=max_idle)
        except KeyboardInterrupt as exc:
            code = EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
            err.print("stopped: the job in progress, if any, was released", markup=False)
        except ContractRefused as exc:
            if progress is not None:
                progress.stop()
            fail(str(exc), EXIT_AUTH)
        finally:
            if progress is not None:
                progress.stop()
    if as_json:
        print_json([asdict(outcome) for outcome in outcomes])
    if code:
        raise typer.Exit(code)
    if once and not outcomes:
        fail("no job was taken", EXIT_NOT_FOUND)
    last = outcomes[-1] if outcomes else None
    if once and last is not None and last.state == "failed":
        raise typer.Exit(EXIT_VERIFY_FAILED)
    if once and last is not None and last.state == "lost":
        raise typer.Exit(EXIT_CONFLICT)
