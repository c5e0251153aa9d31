"""``demo``: run the whole governance loop on a demo data directory, narrated; ``--serve``
then keeps serving the API and the dashboard over it (what ``make run`` does).

The API is hosted in this process on a free loopback port while the scenario runs
(:func:`controlplane.api.serving.serve_in_thread`); the scenario talks to it over HTTP only,
each person with their own token and key. Narration goes to stdout (to stderr with
``--json``, which prints the summary on stdout); training progress bars go to stderr.

Exit codes: 0 the demo ran (or a finished demo was found and reused); 1 a step of the demo
failed or the final verification did not pass; 2 the training libraries are missing; 5 the
data directory holds something that is not a demo's (it is never reused nor deleted). An
unfinished demo (interrupted, or failed) is started over; ``--force`` redoes a finished one.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from controlplane.cli.common import (
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    JsonOpt,
    err,
    exit_code_for_status,
    fail,
    handle_errors,
    out,
    print_json,
)
from controlplane.cli.server_cmds import run_server
from controlplane.client.api import ApiError
from controlplane.config import Settings
from controlplane.demo import (
    DEFAULT_DIR,
    INSTALL_HINT,
    DemoDir,
    DemoFailed,
    DirState,
    Scenario,
    Step,
    missing_training_libraries,
)
from controlplane.errors import ControlPlaneError


def _condensed(actions: list[str]) -> str:
    """``a, b x3, c`` in order of first appearance."""
    counts = Counter(actions)
    return ", ".join(a if counts[a] == 1 else f"{a} x{counts[a]}" for a in dict.fromkeys(actions))


class _Narration:
    """The scenario's steps as numbered lines, training as a transient progress bar."""

    def __init__(self, console: Console, bars: bool) -> None:
        self.console = console
        self.bars = bars
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.current: Step | None = None

    def begin(self, step: Step) -> None:
        self.current = step
        self.console.print(
            f"[bold]{step.number:>2}.[/bold] [cyan]{step.actor}[/cyan]: {step.text}", soft_wrap=True
        )

    def end(self, step: Step) -> None:
        self.progress_done()
        where = step.seqs
        if step.actions:
            where += ": " + _condensed(step.actions)
        if step.result:
            self.console.print(f"    {step.result}", markup=False, soft_wrap=True)
        self.console.print(f"    [dim]\\[{where}][/dim]", soft_wrap=True)

    def progress(self, label: str, fraction: float, message: str) -> None:
        if not self.bars:
            return
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("    {task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=1.0)
        assert self._task is not None
        self._progress.update(
            self._task,
            completed=max(0.0, min(1.0, fraction)),
            # the trainers prefix their own name ("dpo: step 3/40"): show the label instead
            description=f"{label}: {message.split(': ', 1)[-1][:50]}",
        )

    def progress_done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None


def _next_steps(summary: dict[str, Any], settings: Settings, dashboard: bool) -> list[str]:
    env = Path(summary["env_dir"])
    default = Path(summary["data_dir"]) == DemoDir.at(DEFAULT_DIR).root
    command = "make run, or controlplane demo --serve" if default else "controlplane demo --serve"
    lines = [
        f"{command} --data-dir {summary['data_dir']}: the API on {settings.url}"
        + (f" and the dashboard on {_dashboard_url(settings)}" if dashboard else "")
        + "; sign in with a token from the tokens file",
        f"source {env / 'carol.env'}   # act as carol (compliance reviewer) with the CLI, then:",
        f"  controlplane status {summary['policy']['ref']}",
        f"  controlplane lineage {summary['policy']['ref']}@1",
        "  controlplane log --tail",
        "  controlplane verify",
    ]
    return lines


def _dashboard_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.dashboard_port}"


def _print_summary(
    summary: dict[str, Any], settings: Settings, dashboard: bool, reused: bool = False
) -> None:
    verify = summary.get("verify") or {}
    rollback = summary.get("rollback") or {}
    forged = summary.get("forged_contract") or {}
    alias = (summary.get("mlflow") or {}).get("after_rollback") or {}
    production = ", ".join(summary["policy"]["production"]) or "nothing"
    state = "verified" if verify.get("ok") else "NOT verified"
    if reused:
        out.print(
            f"[bold]The demo[/bold] ran at {summary['finished_at']} in "
            f"{summary['duration_seconds']:.0f} s: {summary['ledger_size']} ledger entries, "
            f"{state}."
        )
    else:
        out.print()
        out.print(
            f"[bold]Done[/bold] in {summary['duration_seconds']:.0f} s: "
            f"{summary['ledger_size']} ledger entries, {state}."
        )
    evidence = summary.get("refused_without_evidence") or {}
    rows = [
        ("production", f"{production} (rolled back from version {rollback.get('from_version')})"),
        (
            "MLflow",
            f"alias production -> {alias.get('model')} v{alias.get('mlflow_version')} "
            f"(our version {alias.get('version')})"
            if alias
            else "alias not mirrored",
        ),
        (
            "refused",
            f"{forged.get('runner')}'s tampered contract at seq {forged.get('seq')}; staging "
            f"without evaluation evidence at seq {evidence.get('seq')}",
        ),
        ("data dir", f"{summary['data_dir']} (SQLite; MLflow store in mlflow/)"),
        ("tokens", f"{summary['tokens_file']} (and one env file per person in env/)"),
    ]
    for label, text in rows:
        out.print(f"  {label:<11} {text}", markup=False, soft_wrap=True)
    out.print("[bold]Next[/bold]:")
    for line in _next_steps(summary, settings, dashboard):
        out.print(f"  {line}", markup=False, soft_wrap=True)


@handle_errors
def demo(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            help="The demo's own data directory (never CONTROLPLANE_DATA_DIR's).",
        ),
    ] = DEFAULT_DIR,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="Then keep serving the API and the dashboard over the demo data; at once "
            "when the directory already holds a finished demo.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Empty a demo directory (finished or not) and run again."),
    ] = False,
    host: Annotated[
        str, typer.Option(envvar="CONTROLPLANE_HOST", help="Bind address for --serve.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="CONTROLPLANE_PORT", help="API port for --serve.")
    ] = 8600,
    dashboard: Annotated[bool, typer.Option(help="With --serve, also start the dashboard.")] = True,
    dashboard_port: Annotated[
        int, typer.Option(envvar="CONTROLPLANE_DASHBOARD_PORT", help="Dashboard port.")
    ] = 8601,
    progress_bar: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Training progress bars on stderr.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Run the whole governance loop on a fresh demo data directory, narrated: people and
    keys, approved data, signed contracts, a reward model and two DPO policies trained for
    real by a runner, evaluations, signed promotions to production (MLflow alias following),
    a forged contract refused, a rollback, and a client-side verification of the ledger."""
    workspace = DemoDir.at(data_dir)
    settings = workspace.settings(host, port, dashboard_port)
    if workspace.state() is DirState.FINISHED and not force:
        summary = workspace.summary()
        if as_json:
            print_json({**summary, "reused": True})
        else:
            err.print(
                f"{workspace.root} already holds the demo that finished at "
                f"{summary.get('finished_at')}; --force runs it again from scratch.",
                markup=False,
            )
            if not serve:
                _print_summary(summary, settings, dashboard, reused=True)
        if serve:
            _serve(settings, summary, dashboard)
        return
    missing = missing_training_libraries()
    if missing:
        fail(f"{INSTALL_HINT} (missing: {', '.join(missing)})", EXIT_USAGE)
    if workspace.state() is DirState.UNFINISHED:
        err.print(
            f"an earlier demo in {workspace.root} did not finish: starting over", markup=False
        )
    workspace.prepare(force)
    summary = _run(workspace, settings, as_json, progress_bar)
    if as_json:
        print_json(summary)
    else:
        _print_summary(summary, settings, dashboard)
    if not summary["ok"]:
        raise typer.Exit(EXIT_VERIFY_FAILED)
    if serve:
        _serve(settings, summary, dashboard)


def _run(workspace: DemoDir, settings: Settings, as_json: bool, bars: bool) -> dict[str, Any]:
    from controlplane.api.serving import serve_in_thread
    from controlplane.core import ControlPlane

    _quiet_mlflow()
    narration = _Narration(err if as_json else out, bars and err.is_terminal)
    narration.console.print(
        f"[bold]controlplane demo[/bold]: the governance loop, for real, in {workspace.root}",
        soft_wrap=True,
    )
    cp = ControlPlane(settings)
    try:
        cp.init()
        token = settings.admin_token_file.read_text().strip()
        with serve_in_thread(cp) as url:
            narration.console.print(
                f"[dim]API for the demo on {url} (this process); SQLite in {workspace.root}[/dim]",
                soft_wrap=True,
            )
            scenario = Scenario(url, token, workspace, settings, narration, settings.url)
            try:
                summary = scenario.run()
            except (DemoFailed, ApiError, ControlPlaneError) as exc:
                narration.progress_done()
                step = narration.current
                where = f"step {step.number} ({step.text})" if step else "the demo"
                code = (
                    EXIT_VERIFY_FAILED
                    if isinstance(exc, DemoFailed)
                    else exit_code_for_status(exc.status)
                )
                fail(f"{where} failed: {exc.detail}", code)
            finally:
                scenario.close()
    finally:
        narration.progress_done()
        cp.close()
    summary["serve_url"] = settings.url
    summary["dashboard_url"] = _dashboard_url(settings)
    workspace.finish(summary)
    return summary


def _quiet_mlflow() -> None:
    """MLflow logs its schema creation at INFO on its own handler; the narration says enough.

    Its level is set when ``mlflow`` is first imported, so import it first, then lower it.
    """
    try:
        import mlflow  # noqa: F401
    except ImportError:  # the mirror then reports MLflow as unreachable
        return
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def _serve(settings: Settings, summary: dict[str, Any], dashboard: bool) -> None:
    notes = [
        f"demo people  tokens in {summary['tokens_file']}; "
        f"`source {Path(summary['env_dir']) / 'alice.env'}` to act as alice",
        f"then         controlplane status {summary['policy']['ref']}",
    ]
    run_server(settings, 1, dashboard, notes)


__all__ = ["demo"]
