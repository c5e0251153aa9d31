"""``init`` and ``serve``: the server side, on the embedded default or PostgreSQL."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer

from controlplane.cli.common import JsonOpt, err, handle_errors, out, print_json
from controlplane.config import REPO_ROOT, Settings

DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="CONTROLPLANE_DATA_DIR",
        help="Data directory (SQLite database, keys, bootstrap token).",
        show_default=".controlplane",
    ),
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CONTROLPLANE_DATABASE_URL",
        help="SQLAlchemy URL; default SQLite in the data directory.",
        show_default=False,
    ),
]


def _settings(data_dir: Path | None, database_url: str | None, **extra: object) -> Settings:
    values: dict[str, object] = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    if database_url is not None:
        values["database_url"] = database_url
    return Settings(**values)  # type: ignore[arg-type]


@handle_errors
def init(
    data_dir: DataDirOpt = None, database_url: DatabaseOpt = None, as_json: JsonOpt = False
) -> None:
    """Create the database, the checkpoint signing key and the bootstrap admin token.

    Idempotent: running it again changes nothing. The admin token is printed once and kept
    in DATA_DIR/admin.token (mode 0600) for local use.
    """
    settings = _settings(data_dir, database_url)
    from controlplane.core import ControlPlane  # heavy (SQLAlchemy, Alembic): server side only

    cp = ControlPlane(settings)
    try:
        result = cp.init()
        origin = cp.signer.origin
    finally:
        cp.close()
    info = {
        "data_dir": str(settings.data_dir.resolve()),
        "database": _redact(settings.resolved_database_url),
        "origin": origin,
        "created_admin": result.created_admin,
        "admin_token": result.admin_token,
        "admin_token_file": str(settings.admin_token_file.resolve()),
    }
    if as_json:
        print_json(info)
        return
    out.print(f"database     {info['database']}")
    out.print(f"data dir     {info['data_dir']}")
    out.print(f"ledger       {origin}")
    if result.admin_token:
        out.print(
            f"admin token  {result.admin_token}  (shown once; also in {info['admin_token_file']})"
        )
    else:
        out.print("already initialised")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        return f"{scheme}://{creds}@{host}"
    return url


@handle_errors
def serve(
    data_dir: DataDirOpt = None,
    database_url: DatabaseOpt = None,
    host: Annotated[
        str | None, typer.Option(envvar="CONTROLPLANE_HOST", help="Bind address.")
    ] = None,
    port: Annotated[int | None, typer.Option(envvar="CONTROLPLANE_PORT", help="Port.")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    dashboard: Annotated[
        bool, typer.Option(help="Also start the dashboard (Streamlit) beside the API.")
    ] = True,
    dashboard_port: Annotated[
        int | None,
        typer.Option(
            envvar="CONTROLPLANE_DASHBOARD_PORT", help="Dashboard port.", show_default="8601"
        ),
    ] = None,
) -> None:
    """Start the API server and the dashboard beside it (initialising the data directory on
    first start); stopping the server stops the dashboard."""
    settings = _settings(
        data_dir, database_url, host=host, port=port, dashboard_port=dashboard_port
    )
    run_server(settings, workers, dashboard)


def run_server(
    settings: Settings, workers: int = 1, dashboard: bool = True, notes: Sequence[str] = ()
) -> None:
    """Serve the API over ``settings`` (and the dashboard beside it) until stopped; shared by
    ``serve`` and ``demo --serve``. ``notes`` are printed after the start banner."""
    child = _start_dashboard(settings) if dashboard else None
    # uvicorn re-raises SIGTERM after its graceful shutdown; turn it into SystemExit so the
    # ``finally`` below runs and the dashboard stops with the API.
    previous = signal.signal(signal.SIGTERM, _exit) if child is not None else None
    try:
        _serve_api(settings, workers, child is not None, notes)
    finally:
        if child is not None:
            _stop(child)
            signal.signal(signal.SIGTERM, previous)


def _exit(signum: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)


def _serve_api(
    settings: Settings, workers: int, with_dashboard: bool, notes: Sequence[str] = ()
) -> None:
    import uvicorn

    from controlplane.api.app import create_app
    from controlplane.core import ControlPlane
    from controlplane.ops.logs import configure_server_logging

    # one JSON line per request with its request id (CONTROLPLANE_LOG_FORMAT=text for humans)
    logging_options = configure_server_logging(settings.log_format, settings.log_level)
    cp = ControlPlane(settings)
    result = cp.init()
    token = result.admin_token
    if token is None and settings.admin_token_file.exists():
        token = settings.admin_token_file.read_text().strip()
    url = f"http://{settings.host}:{settings.port}"
    err.print(f"controlplane listening on {url}", markup=False)
    err.print(f"  database     {_redact(settings.resolved_database_url)}", markup=False)
    err.print(f"  data dir     {settings.data_dir.resolve()}", markup=False)
    err.print(f"  ledger       {cp.signer.origin}", markup=False)
    err.print(f"  docs         {url}/docs", markup=False)
    if with_dashboard:
        err.print(f"  dashboard    {_dashboard_url(settings)}", markup=False)
    if token:
        err.print(f"  admin token  {token}", markup=False)
        err.print(f"  try: export CONTROLPLANE_URL={url} CONTROLPLANE_TOKEN={token}", markup=False)
    for note in notes:
        err.print(f"  {note}", markup=False)
    if workers > 1:
        # Worker processes build their own settings from the environment.
        os.environ["CONTROLPLANE_DATA_DIR"] = str(settings.data_dir.resolve())
        os.environ["CONTROLPLANE_DATABASE_URL"] = settings.resolved_database_url
        cp.close()
        uvicorn.run(
            "controlplane.api.asgi:app",
            host=settings.host,
            port=settings.port,
            workers=workers,
            **logging_options,
        )
        return
    uvicorn.run(create_app(cp=cp), host=settings.host, port=settings.port, **logging_options)


DASHBOARD_APP = REPO_ROOT / "dashboard" / "app.py"


def _reachable(host: str) -> str:
    """An address a local client can connect to for a server bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def _dashboard_url(settings: Settings) -> str:
    return f"http://{_reachable(settings.host)}:{settings.dashboard_port}"


def _start_dashboard(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start ``streamlit run dashboard/app.py`` as a child process, told where the API is.

    The dashboard is a client of the API like any other, so it runs in its own process with
    its own settings; it gets the API address (CONTROLPLANE_URL) and no token.
    """
    if importlib.util.find_spec("streamlit") is None or not DASHBOARD_APP.exists():
        err.print("  (dashboard not started: streamlit or dashboard/app.py missing)", markup=False)
        return None
    env = {
        **os.environ,
        "CONTROLPLANE_URL": f"http://{_reachable(settings.host)}:{settings.port}",
    }
    # The dashboard serves many users: it must not pre-fill an operator's CLI token for them.
    env.pop("CONTROLPLANE_TOKEN", None)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(DASHBOARD_APP),
        "--server.headless=true",
        f"--server.address={settings.host}",
        f"--server.port={settings.dashboard_port}",
        "--browser.gatherUsageStats=false",
        "--server.fileWatcherType=none",
        "--client.toolbarMode=viewer",
        "--logger.level=warning",
    ]
    linux = sys.platform.startswith("linux")
    return subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent if linux else None
    )


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when ``serve`` dies, however it dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so no dashboard outlives its API."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
