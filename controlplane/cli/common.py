"""Shared options, output and the one mapping from errors to exit codes.

Exit codes scripts can rely on:
0 success; 1 verification failed; 2 bad usage or invalid input (400/413/422);
3 not authenticated or not allowed (401/403); 4 not found (404); 5 conflict (409);
6 server unreachable or server error (5xx).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from controlplane.client.api import ApiClient, ApiError
from controlplane.config import DEFAULT_PROJECT, Settings
from controlplane.errors import ControlPlaneError
from controlplane.ledger.errors import LedgerError

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_SERVER = 6

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="CONTROLPLANE_URL", help="API address.", show_default=False),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CONTROLPLANE_TOKEN",
        help="Bearer token (default: the bootstrap admin token of the local data directory).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    str, typer.Option("--project", "-p", envvar="CONTROLPLANE_PROJECT", help="Project.")
]
DEFAULT_PROJECT_VALUE = DEFAULT_PROJECT


def exit_code_for_status(status: int) -> int:
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status == 0 or status >= 500:
        return EXIT_SERVER
    return EXIT_USAGE


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """One line on stderr, then exit with ``code``."""
    err.print(f"error: {message}", markup=False)
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def settings_problem(exc: ValidationError) -> str:
    """Pydantic's multi-line report as one line. For the settings it names the environment
    variables, since the CLI reads them from ``CONTROLPLANE_*``: that is what to correct."""
    settings = exc.title == Settings.__name__
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"])
        name = f"CONTROLPLANE_{field.upper()}" if settings and field else field or "input"
        problems.append(f"{name}: {error['msg']}")
    return ("invalid setting " if settings else "invalid input ") + "; ".join(problems)


def handle_errors(fn: F) -> F:
    """Turn API and domain errors into a one-line message and a stable exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            fail(exc.detail, exit_code_for_status(exc.status))
        except ControlPlaneError as exc:
            fail(exc.detail, exit_code_for_status(exc.status))
        except LedgerError as exc:
            fail(f"verification failed: {exc}", EXIT_VERIFY_FAILED)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}", EXIT_USAGE)
        except ValidationError as exc:  # (a ValueError too) settings from the environment
            fail(settings_problem(exc), EXIT_USAGE)
        except ValueError as exc:
            fail(str(exc), EXIT_USAGE)

    return wrapper  # type: ignore[return-value]


def key_values(pairs: list[str] | None, json_file: Path | None, option: str) -> dict[str, Any]:
    """A JSON object from ``--OPTION KEY=VALUE`` pairs over an optional JSON file.

    Values are parsed as JSON when they are JSON (``3``, ``true``, ``[1]``), else kept as text,
    so ``--param lr=0.1`` is a number and ``--meta team=rlhf`` a string.
    """
    values: dict[str, Any] = {}
    if json_file is not None:
        loaded = read_json(json_file)
        if not isinstance(loaded, dict):
            raise ValueError(f"{json_file} must hold a JSON object")
        values.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}")
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


def read_json(path: Path) -> Any:
    """A JSON file given on the command line; a bad one is a ValueError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a UTF-8 JSON file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_default, ensure_ascii=False) + "\n")


def list_page(items: Sequence[Any]) -> dict[str, Any]:
    """A list the CLI built itself, in the shape of the HTTP API's list answers.

    Every list command's ``--json`` prints ``{"data": [...], "count": N}`` (plus whatever else
    the API's page carries, such as ``next_start``), so a script reads every list the same way
    and one that also calls the API needs no second parser. API pages are printed as they come.
    """
    return {"data": list(items), "count": len(items)}


@contextmanager
def client(url: str | None, token: str | None) -> Iterator[ApiClient]:
    """An API client from options, environment and the local data directory."""
    settings = Settings()
    resolved_token = token or settings.token
    if not resolved_token and settings.admin_token_file.exists():
        resolved_token = settings.admin_token_file.read_text().strip()
    api = ApiClient(url or settings.url, resolved_token)
    try:
        yield api
    finally:
        api.close()
