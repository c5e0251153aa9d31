"""Failures a script can rely on: the documented exit code, one ``error:`` line on stderr,
nothing on stdout (so ``--json`` consumers never parse half a document) and no traceback.

0 ok, 1 verification failed, 2 usage or invalid input, 3 auth, 4 not found, 5 conflict,
6 server unreachable or 5xx. The server is real (SQLite is enough here: these are
properties of the command line, the database behaviour is covered elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import (
    PREFERENCES,
    RUBRIC,
    cli_env,
    fails,
    invoke,
    one_line_error,
    run_json,
)
from tests.utils.server import LiveServer, free_port

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
GOOD_LINE = PREFERENCES.read_text().splitlines()[0]

# (bad line, words the message must contain besides the line number)
BAD_LINES = {
    "invalid-json": ('{"prompt": "p", "chosen": "a", ', "JSON"),
    "missing-rejected": ('{"prompt": "p", "chosen": "a"}', "rejected"),
    "empty-chosen": ('{"prompt": "p", "chosen": "", "rejected": "b"}', "chosen"),
    "not-an-object": ('["p", "a", "b"]', ""),
    "prompt-not-string": ('{"prompt": 7, "chosen": "a", "rejected": "b"}', "prompt"),
}


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@SQLITE_ONLY
def test_bad_dataset_line_names_the_line(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    for n, (case, (bad, must_mention)) in enumerate(BAD_LINES.items()):
        line_no = n % 3 + 1
        lines = [GOOD_LINE] * 3
        lines[line_no - 1] = bad
        data = tmp_path / f"{case}.jsonl"
        data.write_text("\n".join(lines) + "\n")
        extra = ["--json"] if n % 2 else []
        result = fails(["register", "dataset", f"d-{case}", data, *extra], env, 2)
        message = one_line_error(result)
        assert f"line {line_no}" in message, (case, message)
        assert must_mention in message, (case, message)
        assert result.stdout == "", (case, result.stdout)
    # Nothing was registered by any of these attempts.
    assert run_json(["list", "--kind", "dataset"], env)["count"] == 0


@SQLITE_ONLY
def test_invalid_input_is_exit_2(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    empty = tmp_path / "empty.md"
    empty.write_text("")
    binary = tmp_path / "binary.md"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    meta = tmp_path / "meta.json"
    meta.write_text("[1, 2]")
    cases = [
        ["register", "rubric", "empty", empty],
        ["register", "rubric", "binary", binary],
        ["register", "dataset", "dir", tmp_path],  # a dataset is a file
        ["register", "rubric", "r", RUBRIC, "--meta", "no-equals-sign"],
        ["register", "rubric", "r", RUBRIC, "--metadata-file", meta],
        ["register", "reward_model", "m", RUBRIC, "--trained-on", "not-a-ref"],
        ["show", "no-slash"],
        ["lineage", "dataset/prefs@1", "--direction", "sideways"],
    ]
    for n, args in enumerate(cases):
        extra = ["--json"] if n % 2 else []
        result = fails([*args, *extra], env, 2)
        one_line_error(result)
        assert result.stdout == "", (args, result.stdout)


def test_unknown_kind_is_exit_2(tmp_path: Path) -> None:
    """Refused before any request: no server is needed (the URL is a closed port)."""
    env = cli_env(None, tmp_path, CONTROLPLANE_URL=closed_port_url(), CONTROLPLANE_TOKEN="x")
    for kind in ("model", "Dataset", "datasets"):
        message = one_line_error(fails(["register", kind, "x", PREFERENCES], env, 2))
        assert repr(kind) in message and "dataset" in message, message


@SQLITE_ONLY
def test_not_found_is_exit_4(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    run_json(["register", "rubric", "helpfulness", RUBRIC], env)
    for args in (
        ["show", "dataset/nope@1"],
        ["show", "dataset/nope"],
        ["show", "rubric/helpfulness@2"],  # the artifact exists, that version does not
        ["show", "rubric/helpfulness@1", "-p", "other-project"],
        ["lineage", "dataset/nope@1"],
        ["principal", "show", "nobody"],
        ["role", "list", "nobody"],
        ["principal", "revoke-token", "tok_0000000000000000"],
    ):
        result = fails([*args, "--json"], env, 4)
        one_line_error(result)
        assert result.stdout == ""
    message = one_line_error(fails(["show", "dataset/nope@1"], env, 4))
    assert "dataset/nope@1" in message


@SQLITE_ONLY
def test_missing_or_wrong_token_is_exit_3(server: LiveServer, tmp_path: Path) -> None:
    no_token = cli_env(server, tmp_path, CONTROLPLANE_TOKEN=None)
    wrong = cli_env(server, tmp_path, CONTROLPLANE_TOKEN="cpt_not-a-real-token")
    almost = cli_env(server, tmp_path, CONTROLPLANE_TOKEN=server.admin_token[:-1] + "x")
    commands = [
        ["list"],
        ["whoami", "--json"],
        ["verify", "--state", tmp_path / "s.json"],
        ["register", "rubric", "r", RUBRIC, "--json"],
        ["principal", "create", "eve"],
    ]
    for env in (no_token, wrong, almost):
        for args in commands:
            result = fails(args, env, 3)
            one_line_error(result)
            assert result.stdout == ""
    assert not (tmp_path / "s.json").exists()
    admin = cli_env(server, tmp_path)
    assert run_json(["list"], admin)["count"] == 0
    assert run_json(["principal", "list"], admin)["count"] == 1


def test_server_unreachable_is_exit_6(tmp_path: Path) -> None:
    env = cli_env(None, tmp_path, CONTROLPLANE_URL=closed_port_url(), CONTROLPLANE_TOKEN="x")
    for args in (
        ["list"],
        ["show", "dataset/prefs@1"],
        ["log"],
        ["whoami"],
        ["checkpoint"],
        ["proof", "inclusion", "0"],
        ["register", "dataset", "prefs", PREFERENCES],
        ["verify", "--state", tmp_path / "s.json"],
        ["export", "-o", tmp_path / "bundle.json"],
    ):
        result = fails([*args, "--json"], env, 6)
        message = one_line_error(result)
        assert "cannot reach" in message, message
        assert result.stdout == ""
    assert "cannot reach" in one_line_error(fails(["verify"], env, 6))
    assert not (tmp_path / "bundle.json").exists()


@SQLITE_ONLY
def test_failed_export_leaves_no_partial_file(server: LiveServer, tmp_path: Path) -> None:
    unreachable = cli_env(
        None, tmp_path, CONTROLPLANE_URL=closed_port_url(), CONTROLPLANE_TOKEN="x"
    )
    fails(["export", "-o", tmp_path / "a.json"], unreachable, 6)
    refused = cli_env(server, tmp_path, CONTROLPLANE_TOKEN="cpt_wrong")
    fails(["export", "-o", tmp_path / "b.json"], refused, 3)
    assert sorted(p.name for p in tmp_path.glob("*.json*")) == []


@SQLITE_ONLY
def test_conflict_is_exit_5(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    run_json(["principal", "create", "alice"], env)
    for extra in ([], ["--json"]):
        result = fails(["principal", "create", "alice", *extra], env, 5)
        message = one_line_error(result)
        assert "alice" in message and "exists" in message, message
        assert result.stdout == ""
    fails(["principal", "create", "admin"], env, 5)


def test_usage_errors_are_exit_2(tmp_path: Path) -> None:
    """Typer's own usage errors (missing file, bad option, unknown command) are exit 2 too."""
    env = cli_env(None, tmp_path, CONTROLPLANE_URL=closed_port_url(), CONTROLPLANE_TOKEN="x")
    missing = tmp_path / "nope.jsonl"
    for args in (
        ["register", "dataset", "prefs", missing],
        ["register", "dataset", "prefs"],
        ["register", "dataset", "prefs", PREFERENCES, "--no-such-option"],
        ["log", "--limit", "0"],
        ["log", "--limit", "many"],
        ["proof", "inclusion", "-1"],
        ["no-such-command"],
    ):
        result = invoke(args, env)
        assert result.exit_code == 2, (args, result.exit_code, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == "", (args, result.stdout)
    result = invoke(["register", "dataset", "prefs", missing], env)
    assert "nope." in result.stderr and "does not exist" in result.stderr, result.stderr
    # A bundle that is not there, or is not a bundle, is invalid input (our message).
    not_json = tmp_path / "not-a-bundle.json"
    not_json.write_text("{}")
    for path in (missing, not_json):
        for extra in ([], ["--json"]):
            result = fails(["verify", "--bundle", path, *extra], env, 2)
            assert str(path) in one_line_error(result)
            assert result.stdout == ""


def test_an_invalid_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = cli_env(
        None,
        tmp_path,
        CONTROLPLANE_API_CONCURRENCY="0",
        CONTROLPLANE_JOB_LEASE_SECONDS="soon",
    )
    result = fails(["verify", "--database"], env, 2)
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting CONTROLPLANE_API_CONCURRENCY: Input should be greater than or "
        "equal to 1; CONTROLPLANE_JOB_LEASE_SECONDS: Input should be a valid integer, unable to "
        "parse string as an integer"
    ]
