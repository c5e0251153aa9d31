"""Tampering is caught by ``controlplane verify``, on SQLite and on PostgreSQL.

The attacker here owns the database: the append-only triggers are dropped with raw SQL and a
stored ledger row is edited (one character of one column), or the newest history is deleted as
a consistent rollback (entries, Merkle nodes and checkpoints together). The client trusts
nothing the server says: it recomputes every hash and root and compares with the checkpoint it
pinned on an earlier successful verify. An exported bundle is attacked as a file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from controlplane.ledger.entry import compute_entry_hash
from tests.cli.helpers import (
    PREFERENCES,
    REWARD_MODEL,
    RUBRIC,
    cli_env,
    describe,
    fails,
    invoke,
    json_of,
    ok,
    run_json,
)
from tests.utils.databases import KINDS, served
from tests.utils.server import LiveServer

APPEND_ONLY = ("ledger_entries", "merkle_nodes", "checkpoints")


@dataclass
class Ledger:
    """A server with a few registered artifacts and a client that verified it once."""

    server: LiveServer
    env: dict[str, str | None]
    state: Path
    size: int
    target: int  # the seq to attack: the dataset registration, with entries after it
    bundle: Path  # exported before any attack


def populate(server: LiveServer, directory: Path) -> Ledger:
    """Register three artifacts, verify once (pinning the checkpoint), export a bundle."""
    env = cli_env(server, directory)
    run_json(["register", "rubric", "helpfulness", RUBRIC], env)
    dataset = run_json(["register", "dataset", "prefs", PREFERENCES], env)
    run_json(
        ["register", "reward_model", "rm", REWARD_MODEL, "--trained-on", "dataset/prefs@1"], env
    )
    state = directory / "pinned.json"
    first = run_json(["verify", "--state", state], env)
    assert first["ok"] is True
    assert dataset["ledger_seq"] < first["size"] - 1
    bundle = directory / "bundle.json"
    ok(["export", "-o", bundle], env)
    return Ledger(server, env, state, first["size"], dataset["ledger_seq"], bundle)


@pytest.fixture
def ledger(server: LiveServer, tmp_path: Path) -> Ledger:
    """A fresh server of its own, for attacks that cannot be undone."""
    return populate(server, tmp_path)


@pytest.fixture(scope="module", params=KINDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ledger]:
    """One server per database for the reversible attacks: each test edits one value, checks
    that verify names it, and puts the original back (and checks that verify passes again).
    The append-only triggers on ledger_entries are already dropped."""
    directory = tmp_path_factory.mktemp(f"tamper-{request.param}")
    with served(request.param, directory) as running:
        ledger = populate(running, directory)
        drop_triggers(running)
        yield ledger


def drop_triggers(server: LiveServer, tables: tuple[str, ...] = ("ledger_entries",)) -> None:
    """What an attacker with database access does first (trigger names: migration 0001)."""
    engine = server.cp.db.writer
    with engine.begin() as conn:
        for table in tables:
            if server.cp.db.dialect == "postgresql":
                conn.execute(text(f"DROP TRIGGER {table}_append_only ON {table}"))
            else:
                conn.execute(text(f"DROP TRIGGER {table}_no_update"))
                conn.execute(text(f"DROP TRIGGER {table}_no_delete"))


def read_column(server: LiveServer, seq: int, column: str) -> str:
    with server.cp.db.writer.connect() as conn:
        value = conn.execute(
            text(f"SELECT {column} FROM ledger_entries WHERE seq = :seq"), {"seq": seq}
        ).scalar_one()
    assert isinstance(value, str)
    return value


def write_column(server: LiveServer, seq: int, column: str, value: str) -> None:
    with server.cp.db.writer.begin() as conn:
        changed = conn.execute(
            text(f"UPDATE ledger_entries SET {column} = :value WHERE seq = :seq"),
            {"value": value, "seq": seq},
        ).rowcount
    assert changed == 1


def replace_at(value: str, index: int, new: str) -> str:
    assert value[index] != new
    return value[:index] + new + value[index + 1 :]


def next_char(char: str, alphabet: str) -> str:
    return alphabet[(alphabet.index(char) + 1) % len(alphabet)]


def flip_hex(value: str) -> str:
    return replace_at(value, 10, next_char(value[10], "0123456789abcdef"))


def flip_timestamp(value: str) -> str:
    """One digit of the microseconds: still a well-formed RFC 3339 timestamp."""
    assert value.endswith("Z")
    return replace_at(value, len(value) - 2, next_char(value[-2], "0123456789"))


def flip_letter(value: str) -> str:
    index = next(i for i, c in enumerate(value) if c.isalpha())
    return replace_at(value, index, next_char(value[index], "abcdefghijklmnopqrstuvwxyz"))


def flip_json_string(key: str) -> Callable[[str], str]:
    """Change one character inside the string value of ``"key":"..."``: still valid JSON."""

    def edit(value: str) -> str:
        marker = f'"{key}":"'
        index = value.index(marker) + len(marker)
        changed = replace_at(value, index, "q" if value[index] != "q" else "r")
        json.loads(changed)
        return changed

    return edit


def break_json(value: str) -> str:
    """One character: the closing brace becomes a bracket, so the text is no longer JSON."""
    assert value.endswith("}")
    changed = value[:-1] + "]"
    with pytest.raises(ValueError):
        json.loads(changed)
    return changed


EDITS: dict[str, tuple[str, Callable[[str], str]]] = {
    "timestamp": ("timestamp", flip_timestamp),
    "actor": ("actor", flip_letter),
    "action": ("action", flip_letter),
    "subject": ("subject", flip_json_string("name")),
    "payload": ("payload", flip_json_string("uri")),
    "payload-invalid-json": ("payload", break_json),
    "subject-invalid-json": ("subject", break_json),
    "prev_hash": ("prev_hash", flip_hex),
    "entry_hash": ("entry_hash", flip_hex),
}


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_entry_is_named(shared: Ledger, case: str, tmp_path: Path) -> None:
    column, edit = EDITS[case]
    ledger, server, k = shared, shared.server, shared.target
    original = read_column(server, k, column)
    write_column(server, k, column, edit(original))
    try:
        check_named(ledger, k, tmp_path / "never-verified.json")
    finally:
        write_column(server, k, column, original)
    # The very same ledger verifies again once the byte is back: the edit alone was caught.
    assert run_json(["verify", "--state", ledger.state], ledger.env)["ok"] is True


def check_named(ledger: Ledger, k: int, fresh_state: Path) -> None:
    """verify exits 1 and names seq ``k`` first: as JSON for the client that pinned the
    checkpoint earlier, and as text for a client that never verified this server before."""
    result = fails(["verify", "--state", ledger.state, "--json"], ledger.env, 1)
    report = json_of(result)
    assert report["ok"] is False, report
    assert report["first_bad_seq"] == k, report
    assert report["problems"] and report["problems"][0].startswith(f"seq {k}: "), report
    assert report["size"] == ledger.size

    text_result = fails(["verify", "--state", fresh_state], ledger.env, 1)
    assert text_result.stdout == ""
    assert f"FAILED: first bad seq {k} " in text_result.stderr, describe(text_result)
    assert f"seq {k}: " in text_result.stderr
    assert not fresh_state.exists(), "a failed verify pins nothing"


def test_rehashed_rewrite_is_caught_by_signed_checkpoints(shared: Ledger, tmp_path: Path) -> None:
    """A careful attacker edits seq k and recomputes entry_hash and prev_hash from k to the
    end, so the chain is self-consistent. The signed checkpoints (and the pinned one) are not
    re-signable without the server's key: verify still names seq k."""
    ledger, server, k = shared, shared.server, shared.target
    columns = ("timestamp", "actor", "action", "subject", "payload", "prev_hash", "entry_hash")
    with server.cp.db.writer.connect() as conn:
        rows = [
            dict(zip(columns, row, strict=True))
            for row in conn.execute(
                text(
                    f"SELECT {', '.join(columns)} FROM ledger_entries WHERE seq >= :k ORDER BY seq"
                ),
                {"k": k},
            )
        ]
    assert len(rows) >= 2
    forged, prev = [], rows[0]["prev_hash"]
    for offset, row in enumerate(rows):
        fields = {
            "seq": k + offset,
            "timestamp": row["timestamp"],
            "actor": "mallory" if offset == 0 else row["actor"],
            "action": row["action"],
            "subject": json.loads(row["subject"]),
            "payload": json.loads(row["payload"]),
            "prev_hash": prev,
        }
        prev = compute_entry_hash(fields)  # the attacker's tool: plain JCS + SHA-256
        forged.append(
            {"actor": fields["actor"], "prev_hash": fields["prev_hash"], "entry_hash": prev}
        )

    def write(values: list[dict[str, str]]) -> None:
        with server.cp.db.writer.begin() as conn:
            for offset, value in enumerate(values):
                conn.execute(
                    text(
                        "UPDATE ledger_entries SET actor = :actor, prev_hash = :prev_hash, "
                        "entry_hash = :entry_hash WHERE seq = :seq"
                    ),
                    {**value, "seq": k + offset},
                )

    write(forged)
    try:
        for state in (ledger.state, tmp_path / "fresh.json"):
            report = json_of(fails(["verify", "--state", state, "--json"], ledger.env, 1))
            assert report["first_bad_seq"] == k, report
            assert any("rewritten" in p for p in report["problems"]), report
            # Every hash link holds: only the signed roots give the rewrite away.
            assert not any(
                "prev_hash" in p or "does not match its content" in p for p in report["problems"]
            ), report
    finally:
        write([{c: row[c] for c in ("actor", "prev_hash", "entry_hash")} for row in rows])
    assert run_json(["verify", "--state", ledger.state], ledger.env)["ok"] is True


def roll_back(server: LiveServer, keep: int) -> None:
    """Restore an older state the way a backup would: the newest entries, their Merkle nodes
    and checkpoints are gone together, so what is left is a self-consistent shorter ledger."""
    drop_triggers(server, APPEND_ONLY)
    with server.cp.db.writer.begin() as conn:
        conn.execute(text("DELETE FROM ledger_entries WHERE seq >= :keep"), {"keep": keep})
        conn.execute(text("DELETE FROM checkpoints WHERE tree_size > :keep"), {"keep": keep})
        # A node at (level, idx) covers leaves [idx * 2**level, (idx + 1) * 2**level).
        levels = [row[0] for row in conn.execute(text("SELECT DISTINCT level FROM merkle_nodes"))]
        for level in levels:
            conn.execute(
                text(
                    "DELETE FROM merkle_nodes WHERE level = :level AND (idx + 1) * :width > :keep"
                ),
                {"level": level, "width": 2**level, "keep": keep},
            )


def test_rollback_is_caught_by_the_pinned_checkpoint(ledger: Ledger, tmp_path: Path) -> None:
    """Delete the newest entries together with their Merkle nodes and checkpoints: a
    self-consistent shorter ledger. Only the checkpoint pinned by the earlier verify shows
    that history went backwards."""
    server, keep = ledger.server, ledger.size - 2
    roll_back(server, keep)

    # The rollback is consistent: a client with no history of this server accepts it...
    newcomer = run_json(["verify", "--state", tmp_path / "newcomer.json"], ledger.env)
    assert newcomer["ok"] is True and newcomer["size"] == keep

    # ...but the client that verified the longer ledger before does not.
    result = fails(["verify", "--state", ledger.state], ledger.env, 1)
    assert "truncated or rolled back" in result.stderr, describe(result)
    report = json_of(fails(["verify", "--state", ledger.state, "--json"], ledger.env, 1))
    assert report["ok"] is False and report["size"] == keep
    assert any("truncated or rolled back" in p for p in report["problems"]), report
    pinned = json.loads(ledger.state.read_text())
    assert [p["size"] for p in pinned.values()] == [ledger.size], "the pin is not moved back"

    # Growing past the pinned size again with different history is a fork, also caught.
    other = tmp_path / "other-rubric.md"
    other.write_text("# Another rubric\n\nDifferent history.\n")
    for n in range(3):
        ok(["register", "rubric", f"fork-{n}", other], ledger.env)
    forked = json_of(fails(["verify", "--state", ledger.state, "--json"], ledger.env, 1))
    assert forked["ok"] is False and forked["size"] > ledger.size
    assert any("rewritten" in p for p in forked["problems"]), forked


# --- the exported bundle, attacked as a file ------------------------------------------------


def _edit_actor(bundle: dict[str, Any], k: int) -> None:
    bundle["entries"][k]["actor"] = "mallory"


def _edit_payload(bundle: dict[str, Any], k: int) -> None:
    bundle["entries"][k]["payload"]["uri"] += "#evil"


def _delete_entry(bundle: dict[str, Any], k: int) -> None:
    del bundle["entries"][k]


def _delete_last_entry(bundle: dict[str, Any], _: int) -> None:
    del bundle["entries"][-1]


def _flip_signature(bundle: dict[str, Any], _: int) -> None:
    """Alter one byte of the Ed25519 signature of the latest checkpoint."""
    note = bundle["checkpoints"][-1]
    body, sep, signature_line = note.rstrip("\n").rpartition("\n")
    dash, name, b64 = signature_line.split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 0x01  # the last byte of the signature (the first 4 are the key hash)
    bundle["checkpoints"][-1] = (
        f"{body}{sep}{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    )


# name -> (how to tamper, whether the report names the target seq, words of one problem)
BUNDLE_ATTACKS: dict[str, tuple[Callable[[dict[str, Any], int], None], bool, str]] = {
    "edit-actor": (_edit_actor, True, "altered"),
    "edit-payload": (_edit_payload, True, "altered"),
    "delete-entry": (_delete_entry, True, "gap"),
    "delete-last-entry": (_delete_last_entry, False, "truncated"),
    "checkpoint-signature": (_flip_signature, False, "checkpoint rejected"),
}


@pytest.mark.parametrize("attack", list(BUNDLE_ATTACKS))
def test_tampered_bundle_fails_offline(shared: Ledger, tmp_path: Path, attack: str) -> None:
    ledger = shared
    tamper, names_seq, words = BUNDLE_ATTACKS[attack]
    # Offline: no server, no token. The untouched bundle verifies (see also test_workflow).
    offline = cli_env(None, tmp_path, CONTROLPLANE_URL="http://127.0.0.1:9")
    if attack == "edit-actor":
        assert run_json(["verify", "--bundle", ledger.bundle], offline)["ok"] is True

    bundle = json.loads(ledger.bundle.read_text())
    tamper(bundle, ledger.target)
    forged = tmp_path / f"{attack}.json"
    forged.write_text(json.dumps(bundle, indent=1))

    result = fails(["verify", "--bundle", forged, "--json"], offline, 1)
    report = json_of(result)
    assert report["ok"] is False and report["problems"], report
    text_result = invoke(["verify", "--bundle", forged], offline)
    assert text_result.exit_code == 1, describe(text_result)
    assert "FAILED" in text_result.stderr and "Traceback" not in text_result.stderr
    assert any(words in p for p in report["problems"]), report
    if names_seq:
        k = ledger.target
        assert report["first_bad_seq"] == k, report
        assert f"first bad seq {k} " in text_result.stderr, describe(text_result)
        assert f"seq {k}: " in text_result.stderr
