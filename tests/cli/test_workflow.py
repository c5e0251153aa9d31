"""The command line end to end, against a real server on SQLite and on PostgreSQL.

The "done means" flow: register a rubric, a dataset that follows it (the edge comes from the
dataset's own ``rubric`` field), a reward model trained on the dataset and a policy initialised
from the reward model; then read it all back (lineage, show, list, log), prove inclusion and
consistency, check the signed checkpoint, export an audit bundle and verify the server and the
bundle. Every command is run twice: for people (text) and for scripts (``--json``).

Then identities: a principal with a project-scoped role can work in its project and nowhere
else, and grants, tokens and disabling take effect at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controlplane import __version__
from tests.cli.helpers import (
    PREFERENCES,
    REWARD_MODEL,
    RUBRIC,
    cli_env,
    fails,
    ok,
    one_line_error,
    run_json,
)
from tests.utils.server import LiveServer

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
CONSOLE_SCRIPT = Path(sys.executable).parent / "controlplane"
ANNOTATOR_EMAILS = ("ann.lee@example.com", "b.okafor@example.com")


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_tree(directory: Path) -> str:
    """A directory's digest as documented: SHA-256 of its sorted ``<hex>  <path>`` manifest."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(directory).as_posix()}\n"
        for p in files
    ]
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def leaf_hash(entry_hash: str) -> str:
    """RFC 6962 leaf hash of an entry, computed here, not by the product."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(entry_hash)).hexdigest()


def register_both_ways(
    env: dict[str, str | None], args: list[Any], ref: str, edges: list[str]
) -> dict[str, Any]:
    """Register once for people, then the same bytes again with --json (idempotent)."""
    text = ok(["register", *args], env).stdout
    assert text.startswith(f"registered {ref}  sha256:"), text
    for edge in edges:
        assert f"  {edge}\n" in text, text
    data = run_json(["register", *args], env)
    assert data["ref"] == ref
    assert data["version"] == 1
    assert data["created"] is False, "the same bytes again must not make a new version"
    assert data["digest"] in text
    assert f"(ledger seq {data['ledger_seq']})" in text
    assert [f"{e['relation']} -> {e['ref']}" for e in data["lineage"]] == edges
    return data  # type: ignore[no-any-return]


def test_done_means_flow(server: LiveServer, tmp_path: Path) -> None:
    env = cli_env(server, tmp_path)
    policy_file = tmp_path / "policy.safetensors"
    policy_file.write_bytes(b"policy weights, initialised from the reward model")

    # --- register, with lineage ----------------------------------------------------------
    rubric = register_both_ways(
        env, ["rubric", "helpfulness", RUBRIC], "rubric/helpfulness@1", edges=[]
    )
    assert rubric["digest"] == sha256_file(RUBRIC)
    assert rubric["metadata"]["document"]["title"] == "Helpfulness rubric v1"

    dataset = register_both_ways(
        env,
        ["dataset", "prefs", PREFERENCES],
        "dataset/prefs@1",
        edges=["follows_rubric -> rubric/helpfulness@1"],  # from the lines' "rubric" field
    )
    assert dataset["digest"] == sha256_file(PREFERENCES)
    stats = dataset["metadata"]["stats"]
    assert stats["rows"] == len(PREFERENCES.read_text().splitlines())
    assert stats["distinct_annotators"] == 3
    assert stats["rubric_refs"] == {"helpfulness@1": stats["rows"]}

    reward_model = register_both_ways(
        env,
        ["reward_model", "rm", REWARD_MODEL, "--trained-on", "dataset/prefs@1"],
        "reward_model/rm@1",
        edges=["trained_on -> dataset/prefs@1"],
    )
    assert reward_model["digest"] == sha256_tree(REWARD_MODEL)

    policy = register_both_ways(
        env,
        ["policy", "pol", policy_file, "--initialized-from", "reward_model/rm@1"],
        "policy/pol@1",
        edges=["initialized_from -> reward_model/rm@1"],
    )
    assert policy["digest"] == sha256_file(policy_file)
    assert policy["uri"] == policy_file.resolve().as_uri()
    seqs = [a["ledger_seq"] for a in (rubric, dataset, reward_model, policy)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4

    # --- lineage -------------------------------------------------------------------------
    text = ok(["lineage", "policy/pol@1"], env).stdout
    for line in (
        "policy/pol@1 came from",
        "reward_model/rm@1  (initialized_from)",
        "dataset/prefs@1  (trained_on)",
        "rubric/helpfulness@1  (follows_rubric)",
    ):
        assert line in text, text
    graph = run_json(["lineage", "policy/pol@1"], env)
    assert graph["root"] == "policy/pol@1"
    chain = ["policy/pol@1", "reward_model/rm@1", "dataset/prefs@1", "rubric/helpfulness@1"]
    assert {n["ref"]: n["distance"] for n in graph["nodes"]} == {
        ref: distance for distance, ref in enumerate(chain)
    }
    expected_edges = {
        ("policy/pol@1", "reward_model/rm@1", "initialized_from"),
        ("reward_model/rm@1", "dataset/prefs@1", "trained_on"),
        ("dataset/prefs@1", "rubric/helpfulness@1", "follows_rubric"),
    }
    assert {(e["child"], e["parent"], e["relation"]) for e in graph["edges"]} == expected_edges
    down = run_json(["lineage", "rubric/helpfulness", "--direction", "descendants"], env)
    assert {n["ref"] for n in down["nodes"]} == set(chain)
    assert {(e["child"], e["parent"], e["relation"]) for e in down["edges"]} == expected_edges
    text = ok(["lineage", "rubric/helpfulness@1", "--direction", "descendants"], env).stdout
    assert "was used by" in text and "policy/pol@1  (initialized_from)" in text, text

    # --- show ----------------------------------------------------------------------------
    text = ok(["show", "dataset/prefs@1"], env).stdout
    assert "dataset/prefs@1  (project default)" in text, text
    assert dataset["digest"] in text
    assert "follows_rubric -> rubric/helpfulness@1" in text
    assert "used by reward_model/rm@1 (trained_on)" in text
    shown = run_json(["show", "dataset/prefs"], env)  # without a version: the latest
    assert shown["ref"] == "dataset/prefs@1"
    assert shown["digest"] == dataset["digest"]
    assert shown["ledger_seq"] == dataset["ledger_seq"]
    assert [e["ref"] for e in shown["lineage"]] == ["rubric/helpfulness@1"]
    assert [(e["ref"], e["relation"]) for e in shown["used_by"]] == [
        ("reward_model/rm@1", "trained_on")
    ]
    for email in ANNOTATOR_EMAILS:  # annotators are pseudonymised before anything is stored
        assert email not in text
        assert email not in json.dumps(shown)

    # --- list ----------------------------------------------------------------------------
    text = ok(["list"], env).stdout
    for label in ("dataset/prefs", "policy/pol", "reward_model/rm", "rubric/helpfulness"):
        assert label in text, text
    assert "4 artifact(s) in project default" in text
    listed = run_json(["list"], env)
    assert listed["count"] == 4
    assert {(a["kind"], a["name"], a["latest_version"]) for a in listed["data"]} == {
        ("dataset", "prefs", 1),
        ("policy", "pol", 1),
        ("reward_model", "rm", 1),
        ("rubric", "helpfulness", 1),
    }
    only = run_json(["list", "--kind", "reward_model"], env)
    assert [a["name"] for a in only["data"]] == ["rm"]
    assert run_json(["list", "-p", "elsewhere"], env)["count"] == 0

    # --- log -----------------------------------------------------------------------------
    text = ok(["log"], env).stdout
    assert "artifact.version_registered" in text
    assert "default:policy/pol@1" in text
    log = run_json(["log", "--limit", "1000"], env)
    entries = log["data"]
    size = len(entries)
    assert [e["seq"] for e in entries] == list(range(size))
    for e in entries:
        assert set(e) >= {"seq", "timestamp", "actor", "action", "subject", "payload"}
        assert set(e) >= {"prev_hash", "entry_hash"}
    for e, nxt in itertools.pairwise(entries):
        assert nxt["prev_hash"] == e["entry_hash"]
    registered = run_json(["log", "--action", "artifact.version_registered"], env)["data"]
    assert [e["seq"] for e in registered] == seqs
    assert [e["subject"]["name"] for e in registered] == ["helpfulness", "prefs", "rm", "pol"]
    assert all(e["actor"] == "admin" for e in registered)
    tail = run_json(["log", "--tail", "--limit", "2"], env)["data"]
    assert [e["seq"] for e in tail] == [size - 2, size - 1]

    # --- checkpoint ----------------------------------------------------------------------
    text = ok(["checkpoint"], env).stdout
    assert f"signature verified; tree size {size}," in text, text
    cp = run_json(["checkpoint"], env)
    assert cp["signature_verified"] is True
    assert cp["tree_size"] == size
    assert cp["note"].splitlines()[:2] == [cp["origin"], str(size)]

    # --- proofs --------------------------------------------------------------------------
    seq = dataset["ledger_seq"]
    text = ok(["proof", "inclusion", seq], env).stdout
    assert f"entry {seq} (artifact.version_registered) is included in the tree of size {size}" in (
        text
    ), text
    assert "verified against the signed checkpoint" in text
    inclusion = run_json(["proof", "inclusion", seq], env)
    assert inclusion["verified"] is True
    assert inclusion["against_signed_checkpoint"] is True
    assert inclusion["leaf_index"] == seq
    assert inclusion["tree_size"] == size
    assert inclusion["root_hash"] == cp["root_hash"]
    assert inclusion["leaf_hash"] == leaf_hash(entries[seq]["entry_hash"])
    older = run_json(["proof", "inclusion", seq, "--tree-size", seq + 1], env)
    assert older["verified"] is True and older["against_signed_checkpoint"] is False

    text = ok(["proof", "consistency", "1"], env).stdout
    assert f"the ledger of {size} entries extends the ledger of 1 entries" in text, text
    consistency = run_json(["proof", "consistency", "1"], env)
    assert consistency["verified"] is True
    assert (consistency["first"], consistency["second"]) == (1, size)
    assert consistency["first_root"] == leaf_hash(entries[0]["entry_hash"])  # RFC 6962: MTH({d0})
    assert consistency["second_root"] == cp["root_hash"]
    middle = run_json(["proof", "consistency", seq, seq + 1], env)
    assert middle["verified"] is True and (middle["first"], middle["second"]) == (seq, seq + 1)

    # --- export --------------------------------------------------------------------------
    bundle_file = tmp_path / "audit" / "bundle.json"
    bundle_file.parent.mkdir()
    text = ok(["export", "-o", bundle_file], env).stdout
    assert f"wrote {bundle_file}: {size} entries" in text, text
    exported = run_json(["export", "--output", bundle_file], env)
    assert exported == {"output": str(bundle_file), "entries": size, "tree_size": size}
    bundle = json.loads(bundle_file.read_text())
    assert bundle["format"] == "controlplane-audit-bundle/v1"
    assert [e["entry_hash"] for e in bundle["entries"]] == [e["entry_hash"] for e in entries]
    assert not list(bundle_file.parent.glob("*.part")), "no temporary file left behind"

    # --- verify the server, then the bundle offline --------------------------------------
    state = tmp_path / "verify-state.json"
    text = ok(["verify", "--state", state], env).stdout
    assert f"OK: {size} entries verified from {server.url}" in text, text
    assert state.exists(), "a successful verify pins the checkpoint"
    pinned = json.loads(state.read_text())
    assert [p["size"] for p in pinned.values()] == [size]
    report = run_json(["verify", "--state", state], env)
    assert report["ok"] is True
    assert report["size"] == size
    assert report["root_hash"] == cp["root_hash"]
    assert report["last_entry_hash"] == entries[-1]["entry_hash"]
    assert report["first_bad_seq"] is None and report["problems"] == []
    assert report["checkpoints_verified"] >= 1
    assert report["source"] == server.url

    text = ok(["verify", "--bundle", bundle_file], env).stdout
    assert f"OK: {size} entries verified from {bundle_file}" in text, text
    offline = run_json(["verify", "--bundle", bundle_file], env)
    assert offline["ok"] is True
    assert (offline["size"], offline["root_hash"]) == (size, cp["root_hash"])
    assert offline["first_bad_seq"] is None
    # Offline means offline: no server address, no token.
    nowhere = cli_env(None, tmp_path, CONTROLPLANE_URL="http://127.0.0.1:9")
    assert run_json(["verify", "--bundle", bundle_file], nowhere)["ok"] is True

    # The pinned checkpoint carries over: more history later still verifies (consistency).
    second_rubric = tmp_path / "harmlessness.md"
    second_rubric.write_text("# Harmlessness rubric v1\n\nPrefer the response that avoids harm.\n")
    ok(["register", "rubric", "harmlessness", second_rubric], env)
    later = run_json(["verify", "--state", state], env)
    assert later["ok"] is True and later["size"] > size
    assert [p["size"] for p in json.loads(state.read_text()).values()] == [later["size"]]
    # Without --state the default file under XDG_STATE_HOME is used (and created).
    assert run_json(["verify"], env)["ok"] is True
    assert (tmp_path / "state" / "controlplane" / "verify-state.json").exists()


def test_principals_roles_and_tokens(server: LiveServer, tmp_path: Path) -> None:
    admin = cli_env(server, tmp_path)
    created = run_json(["principal", "create", "alice", "--role", "engineer@alpha"], admin)
    token = created["token"]["token"]
    assert token and token != server.admin_token
    assert created["principal"]["id"] == "alice"
    assert created["principal"]["roles"] == [{"role": "engineer", "project": "alpha"}]
    alice = cli_env(server, tmp_path, CONTROLPLANE_TOKEN=token)

    me = run_json(["whoami"], alice)
    assert me["id"] == "alice" and me["disabled"] is False
    assert "alice (user, active)" in ok(["whoami"], alice).stdout

    # Project-scoped: alpha yes, beta no (and refusal is exit 3, one line, nothing on stdout).
    mine = run_json(["register", "rubric", "r", RUBRIC, "-p", "alpha"], alice)
    assert (mine["project"], mine["created_by"], mine["ref"]) == ("alpha", "alice", "rubric/r@1")
    assert run_json(["show", "rubric/r@1", "-p", "alpha"], alice)["created_by"] == "alice"
    denied = fails(["register", "rubric", "r", RUBRIC, "-p", "beta", "--json"], alice, 3)
    one_line_error(denied)
    assert denied.stdout == ""
    env_project = {**alice, "CONTROLPLANE_PROJECT": "beta"}
    fails(["register", "rubric", "r", RUBRIC], env_project, 3)
    # An engineer manages no principals.
    fails(["principal", "create", "mallory"], alice, 3)
    fails(["role", "grant", "alice", "admin"], alice, 3)

    # role grant / list / revoke take effect at once.
    granted = run_json(["role", "grant", "alice", "engineer", "-p", "beta"], admin)
    assert {"role": "engineer", "project": "beta"} in granted["roles"]
    assert (
        "granted approver in beta to alice"
        in ok(["role", "grant", "alice", "approver", "-p", "beta"], admin).stdout
    )
    roles = run_json(["role", "list", "alice"], admin)["data"]
    assert sorted((g["role"], g["project"]) for g in roles) == [
        ("approver", "beta"),
        ("engineer", "alpha"),
        ("engineer", "beta"),
    ]
    listed = [line.split() for line in ok(["role", "list", "alice"], admin).stdout.splitlines()]
    assert sorted(listed) == [["approver", "beta"], ["engineer", "alpha"], ["engineer", "beta"]]
    assert run_json(["register", "rubric", "r", RUBRIC, "-p", "beta"], alice)["project"] == "beta"
    revoked = run_json(["role", "revoke", "alice", "engineer", "-p", "beta"], admin)
    assert {"role": "engineer", "project": "beta"} not in revoked["roles"]
    ok(["role", "revoke", "alice", "approver", "-p", "beta"], admin)
    assert run_json(["role", "list", "alice"], admin) == {
        "data": [{"role": "engineer", "project": "alpha"}],
        "count": 1,
    }
    fails(["register", "rubric", "r2", RUBRIC, "-p", "beta"], alice, 3)

    # principal list / show
    everyone = run_json(["principal", "list"], admin)
    assert {p["id"] for p in everyone["data"]} == {"admin", "alice"}
    text = ok(["principal", "list"], admin).stdout
    assert "alice" in text and "engineer@alpha" in text, text
    shown = run_json(["principal", "show", "alice"], admin)
    assert shown["id"] == "alice" and len(shown["tokens"]) == 1
    assert token not in json.dumps(shown), "a token secret is shown once, never again"

    # principal token / revoke-token
    ci = run_json(["principal", "token", "alice", "--name", "ci", "--expires-in-days", "7"], admin)
    assert ci["principal_id"] == "alice" and ci["id"].startswith("tok_")
    assert run_json(["whoami"], {**alice, "CONTROLPLANE_TOKEN": ci["token"]})["id"] == "alice"
    plain = ok(["principal", "token", "alice", "--name", "laptop"], admin)
    laptop_token = plain.stdout.strip()
    assert laptop_token.startswith("cpt_") and "shown once" in plain.stderr
    assert run_json(["whoami", "--token", laptop_token], admin)["id"] == "alice"
    text = ok(["principal", "show", "alice"], admin).stdout
    assert f"token {ci['id']} (ci, expires" in text, text
    assert run_json(["principal", "revoke-token", ci["id"]], admin) == {"revoked": ci["id"]}
    fails(["whoami"], {**alice, "CONTROLPLANE_TOKEN": ci["token"]}, 3)
    tokens = {t["id"]: t for t in run_json(["principal", "show", "alice"], admin)["tokens"]}
    assert tokens[ci["id"]]["revoked_at"] is not None
    assert f"token {ci['id']} (ci, revoked)" in ok(["principal", "show", "alice"], admin).stdout
    assert run_json(["whoami"], alice)["id"] == "alice", "other tokens keep working"

    # principal disable: every token stops at once.
    disabled = run_json(["principal", "disable", "alice"], admin)
    assert disabled["disabled"] is True
    fails(["whoami"], alice, 3)
    fails(["whoami", "--token", laptop_token], admin, 3)
    assert "alice (user, disabled)" in ok(["principal", "show", "alice"], admin).stdout

    # Every change above is in the ledger, and the ledger still verifies.
    actions = [
        e["action"] for e in run_json(["log", "--name", "alice", "--limit", "500"], admin)["data"]
    ]
    for action in (
        "principal.created",
        "role.granted",
        "role.revoked",
        "token.issued",
        "token.revoked",
        "principal.disabled",
    ):
        assert action in actions, actions
    assert run_json(["verify", "--state", tmp_path / "s.json"], admin)["ok"] is True


RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$")


def test_json_timestamps_carry_their_timezone(
    server: LiveServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Scripts parse ``--json`` times; the same field must mean the same on either database."""
    env = cli_env(server, tmp_path)
    registered = run_json(["register", "rubric", "helpfulness", RUBRIC], env)
    created = run_json(["principal", "create", "bob"], env)
    shown_bob = run_json(["principal", "show", "bob"], env)
    times = {
        "register.created_at": registered["created_at"],
        "show.created_at": run_json(["show", "rubric/helpfulness@1"], env)["created_at"],
        "list.created_at": run_json(["list"], env)["data"][0]["created_at"],
        "log.timestamp": run_json(["log"], env)["data"][0]["timestamp"],
        "checkpoint.created_at": run_json(["checkpoint"], env)["created_at"],
        "whoami.created_at": run_json(["whoami"], env)["created_at"],
        "principal create.token.expires_at": created["token"]["expires_at"],
        "principal create.created_at": created["principal"]["created_at"],
        "principal list.created_at": run_json(["principal", "list"], env)["data"][0]["created_at"],
        "principal show.tokens.created_at": shown_bob["tokens"][0]["created_at"],
        "principal show.tokens.expires_at": shown_bob["tokens"][0]["expires_at"],
    }
    naive = {field: value for field, value in times.items() if not RFC3339_UTC.match(value)}
    assert naive == {}, naive


@SQLITE_ONLY
def test_installed_console_script(server: LiveServer, tmp_path: Path) -> None:
    """The real entry point: a separate process, the way users and CI call it."""
    assert CONSOLE_SCRIPT.exists(), CONSOLE_SCRIPT
    env = {
        **os.environ,
        **{k: v for k, v in cli_env(server, tmp_path).items() if v is not None},
        "COLUMNS": "100",
    }
    env.pop("CONTROLPLANE_PROJECT", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(CONSOLE_SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60
        )

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    for word in ("register", "verify", "lineage", "Exit codes"):
        assert word in helped.stdout, helped.stdout
    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"controlplane {__version__}"
    me = run("whoami", "--json")
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["id"] == "admin"
