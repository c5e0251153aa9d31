"""Running the real Typer app in-process, the way a user's shell would run it.

Nothing is mocked: the CLI talks HTTP to the live server started by the ``server`` fixture.
``CliRunner`` keeps stdout and stderr apart, so JSON on stdout can be parsed while messages
on stderr are checked separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from controlplane.cli.main import app
from tests.utils.server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUBRIC = EXAMPLES / "helpfulness-rubric.md"
PREFERENCES = EXAMPLES / "preferences.jsonl"
REWARD_MODEL = EXAMPLES / "reward-model"

_runner = CliRunner()


def cli_env(
    server: LiveServer | None, tmp_path: Path, **extra: str | None
) -> dict[str, str | None]:
    """The environment of one CLI user: server, token, and private data and state dirs.

    ``None`` removes a variable for the run (so an outer CONTROLPLANE_PROJECT cannot leak in).
    """
    env: dict[str, str | None] = {
        "CONTROLPLANE_DATA_DIR": str(tmp_path / "client"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "CONTROLPLANE_PROJECT": None,
    }
    if server is not None:
        env["CONTROLPLANE_URL"] = server.url
        env["CONTROLPLANE_TOKEN"] = server.admin_token
    env.update(extra)
    return env


def invoke(args: list[str], env: dict[str, str | None]) -> Result:
    """Run ``controlplane ARGS`` in-process; exceptions become the result, never escape."""
    return _runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)


def describe(result: Result) -> str:
    """Everything needed to understand a failed assertion about ``result``."""
    exc = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exc = f"\nexception: {result.exception!r}"
    return f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}{exc}"


def ok(args: list[str], env: dict[str, str | None]) -> Result:
    """Run and insist on exit 0 and no traceback."""
    result = invoke(args, env)
    assert result.exit_code == 0, f"controlplane {' '.join(map(str, args))}\n{describe(result)}"
    assert_no_traceback(result)
    return result


def json_of(result: Result) -> Any:
    """The JSON document the command printed on stdout."""
    try:
        return json.loads(result.stdout)
    except ValueError as exc:
        raise AssertionError(f"stdout is not JSON ({exc})\n{describe(result)}") from None


def run_json(args: list[str], env: dict[str, str | None]) -> Any:
    """Run with ``--json``, insist on success, return the parsed document."""
    return json_of(ok([*args, "--json"], env))


def fails(args: list[str], env: dict[str, str | None], code: int) -> Result:
    """Run and insist on exit ``code`` with a clean (traceback-free) error message."""
    result = invoke(args, env)
    assert result.exit_code == code, f"controlplane {' '.join(map(str, args))}\n{describe(result)}"
    assert_no_traceback(result)
    return result


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, describe(result)
    assert "Traceback" not in result.stdout, describe(result)
    # A Python exception escaping the command (rather than a typer/click exit) is a bug.
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), describe(result)


def one_line_error(result: Result) -> str:
    """The single ``error: ...`` line a failed command prints on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("error: "), describe(result)
    return lines[0]


def operator_env(server: LiveServer, directory: Path) -> dict[str, str | None]:
    """The operator on the server machine: ``verify --database`` reads the database itself."""
    settings = server.cp.settings
    return cli_env(
        None,
        directory,
        CONTROLPLANE_DATA_DIR=str(settings.data_dir),
        CONTROLPLANE_DATABASE_URL=settings.resolved_database_url,
        CONTROLPLANE_PSEUDONYM_SECRET="test-pseudonym-secret",
        CONTROLPLANE_ORIGIN=settings.origin,
        CONTROLPLANE_MLFLOW_ENABLED="false",  # its database costs seconds to create
    )
