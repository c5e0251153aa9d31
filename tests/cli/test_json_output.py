"""``--json`` is for scripts: one document on stdout, nothing on stderr, one shape per kind.

Every list command answers like the HTTP API's list endpoints, ``{"data": [...], "count": N}``,
and the ledger commands that draw a progress bar leave stderr empty when it is not a terminal
(the real CLI in-process against a live server, SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer.main

from controlplane.cli.main import app
from tests.cli.helpers import RUBRIC, cli_env, describe, ok, operator_env, run_json
from tests.utils.server import LiveServer

LIST_COMMANDS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("list",): (),
    ("log",): (),
    ("requests",): ("--all",),
    ("alerts",): (),
    ("principal", "list"): (),
    ("role", "list"): ("admin",),
    ("keys", "list"): (),
    ("contract", "list"): (),
    ("job", "list"): (),
    ("server-key", "list"): (),
}
"""Every command that lists things, with the arguments it needs here."""


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command path of a group (Typer bundles its own click: read ``commands``)."""
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        path = (*prefix, name)
        if isinstance(getattr(command, "commands", None), dict):
            found |= _commands(command, path)
        else:
            found.add(path)
    return found


def test_the_table_names_every_list_command() -> None:
    """A new ``... list`` command must join the shape test below."""
    root = typer.main.get_command(app)
    named_list = {path for path in _commands(root) if path[-1] == "list"}
    assert ("job", "list") in named_list
    assert named_list <= set(LIST_COMMANDS), named_list - set(LIST_COMMANDS)


def test_every_list_command_prints_data_and_count(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    run_json(["register", "rubric", "r", RUBRIC], env)
    run_json(["keys", "generate", "--name", "laptop"], env)
    operator = operator_env(server, tmp_path / "operator")
    for command, extra in LIST_COMMANDS.items():
        where = operator if command[0] == "server-key" else env
        document = run_json([*command, *extra], where)
        assert isinstance(document, dict), (command, document)
        assert isinstance(document.get("data"), list), (command, document)
        assert document["count"] == len(document["data"]), (command, document)
    assert run_json(["keys", "list"], env)["data"][0]["local"] is True
    assert run_json(["role", "list", "admin"], env)["data"] == [{"role": "admin", "project": "*"}]
    assert run_json(["list"], env)["data"][0]["name"] == "r"


def _clean(args: list[str], env: dict[str, str | None]) -> object:
    """Run with ``--json``: exit 0, exactly one JSON document on stdout, stderr empty."""
    result = ok([*args, "--json"], env)
    assert result.stderr == "", describe(result)
    return json.loads(result.stdout)


def test_verify_and_export_json_leave_stderr_empty(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    run_json(["register", "rubric", "r", RUBRIC], env)
    report = _clean(["verify", "--state", str(tmp_path / "pins.json")], env)
    assert isinstance(report, dict) and report["ok"] is True
    bundle = tmp_path / "bundle.json"
    exported = _clean(["export", "--output", str(bundle)], env)
    assert isinstance(exported, dict) and exported["output"] == str(bundle)
    offline = _clean(["verify", "--bundle", str(bundle)], env)
    assert isinstance(offline, dict) and offline["ok"] is True
    operator = operator_env(server, tmp_path / "operator")
    database = _clean(["verify", "--database"], operator)
    assert isinstance(database, dict) and database["ok"] is True
