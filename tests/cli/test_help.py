"""``--help`` of every command reads as prose, and a bad JSON file is named in the error.

Checked from outside: Typer's rich help kept each line break of the source docstrings, so
help text came out cut mid-sentence ("... so runners on other" / "machines can fetch them"),
several options had no help at all, and a file that was not JSON failed with Python's bare
"Expecting value: line 1 column 1 (char 0)". No server is needed for any of this.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.cli.errors import reflow
from controlplane.cli.main import app
from controlplane.crypto.keys import public_key_b64
from tests.cli.helpers import cli_env, fails, ok, one_line_error


def _commands() -> Iterator[tuple[list[str], typer.core.TyperCommand]]:
    def walk(command: object, path: list[str]) -> Iterator[tuple[list[str], object]]:
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), [])  # type: ignore[misc]


COMMANDS = sorted(" ".join(path) for path, _ in _commands())


def test_reflow_joins_prose_and_keeps_lists() -> None:
    assert reflow("First line\n    goes on.\n\n    Second\n    paragraph.") == (
        "First line goes on.\n\nSecond paragraph."
    )
    assert reflow("Head.\n\n- one\n- two") == "Head.\n\n- one\n- two"
    assert reflow("Head.\n\n\b\nkeep\nlines") == "Head.\n\n\b\nkeep\nlines"


def test_every_option_and_argument_says_what_it_is() -> None:
    missing = [
        f"{' '.join(path)} {param.name}"
        for path, command in _commands()
        for param in command.params
        if not getattr(param, "help", None)
    ]
    assert not missing, missing


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prose_has_no_line_broken_mid_sentence(command: str, tmp_path: Path) -> None:
    env = cli_env(None, tmp_path, COLUMNS="250")
    shown = ok([*command.split(), "--help"], env).stdout
    (cmd,) = [c for path, c in _commands() if " ".join(path) == command]
    # each paragraph of the docstring is on one line of the (wide) help screen
    for paragraph in reflow(cmd.help or "").split("\n\n"):
        if not paragraph.startswith("\b") and len(paragraph) < 230:
            assert paragraph in shown, f"{paragraph!r} not on one line in:\n{shown}"


def test_group_listings_show_each_summary_on_one_line(tmp_path: Path) -> None:
    shown = ok(["job", "--help"], cli_env(None, tmp_path, COLUMNS="250")).stdout
    assert (
        "Store the bytes of a registered version on the control plane, so runners on other "
        "machines can fetch them" in shown
    )


def test_a_file_that_is_not_json_is_named_in_a_one_line_error(tmp_path: Path) -> None:
    env = cli_env(None, tmp_path)
    bad = tmp_path / "contract.dsse.json"
    bad.write_text("this is not json\n")
    key = public_key_b64(Ed25519PrivateKey.generate().public_key())
    line = one_line_error(fails(["contract", "verify", bad, "--public-key", key], env, 2))
    assert str(bad) in line and "not valid JSON" in line and "line 1" in line

    binary = tmp_path / "params.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    line = one_line_error(
        fails(["job", "queue", "dpo", "-d", "dataset/d@1", "--params-file", binary], env, 2)
    )
    assert str(binary) in line and "UTF-8" in line

    missing = tmp_path / "nowhere.json"
    line = one_line_error(fails(["contract", "sign", missing], env, 2))
    assert str(missing) in line and "No such file" in line

    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1, 2]))
    line = one_line_error(
        fails(["job", "queue", "dpo", "-d", "dataset/d@1", "--params-file", listed], env, 2)
    )
    assert str(listed) in line
