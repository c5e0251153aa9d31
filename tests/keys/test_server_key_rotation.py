"""Rotation of the server's checkpoint signing key, end to end on both databases.

The rotation runs through the real CLI against the database and key file of a live server;
the server (another ControlPlane on the same files, like a second replica) keeps appending and
must follow the rotation without a restart. Verification (server, database, bundle) accepts
each checkpoint signed by the key current at its size and refuses one forged with the retired
key afterwards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select

from controlplane.authz.service import SYSTEM_ACTOR
from controlplane.client.verify import verify_bundle
from controlplane.core import ControlPlane
from controlplane.crypto.keys import key_id, load_private_key, private_key_from_pem
from controlplane.errors import Conflict
from controlplane.ledger.checkpoint import Checkpoint, CheckpointLink
from controlplane.store.integrity import check_database
from controlplane.store.ledger_store import StoreError
from controlplane.store.models import CheckpointRow, ServerKeyRow
from tests.cli.helpers import cli_env, invoke, ok, run_json
from tests.utils.databases import make_settings
from tests.utils.server import LiveServer, live_server


def _server_side_env(cp: ControlPlane, tmp_path: Path) -> dict[str, str | None]:
    """The environment of an operator on the server machine (same data dir and database)."""
    return cli_env(
        None,
        tmp_path,
        CONTROLPLANE_DATA_DIR=str(cp.settings.data_dir),
        CONTROLPLANE_DATABASE_URL=cp.settings.resolved_database_url,
        CONTROLPLANE_PSEUDONYM_SECRET="test-pseudonym-secret",
    )


def _add_principals(cp: ControlPlane, *names: str) -> None:
    for name in names:
        cp.identity.create_principal(SYSTEM_ACTOR, name, "user", name.title())


def _checkpoint_keys(cp: ControlPlane) -> dict[int, str]:
    with cp.db.read() as session:
        rows = session.execute(select(CheckpointRow.tree_size, CheckpointRow.key_id)).all()
    return {size: kid for size, kid in rows}


def _forge(
    origin: str, size: int, root: bytes, pem: bytes, link: CheckpointLink | None = None
) -> str:
    """A checkpoint note signed with the private key in ``pem`` (the same body as the
    genuine one when given its ``link``, so only the signing key differs)."""
    return Checkpoint.linked(origin, size, root, link).sign(origin, private_key_from_pem(pem))


def test_rotation_end_to_end(server: LiveServer, tmp_path: Path) -> None:
    cp = server.cp
    key_file = cp.settings.resolved_signing_key_file
    old_pem = key_file.read_bytes()
    old_note_id = cp.signer.verifier.key_id_hex
    _add_principals(cp, "alice", "bob")

    client_env = cli_env(server, tmp_path)
    assert run_json(["verify"], client_env)["ok"] is True  # pins a checkpoint by the old key

    env = _server_side_env(cp, tmp_path)
    rotated = run_json(["server-key", "rotate", "--reason", "yearly"], env)
    assert rotated["previous_key_id"] == key_id(private_key_from_pem(old_pem).public_key())
    new_kid = key_id(load_private_key(key_file).public_key())
    assert rotated["key_id"] == new_kid and new_kid != rotated["previous_key_id"]
    assert not key_file.with_name(key_file.name + ".retired").exists()  # old secret gone

    # the server still holds the old key in memory: its next append follows the rotation
    _add_principals(cp, "carol")
    rotation_seq = rotated["seq"]
    keys = _checkpoint_keys(cp)
    new_note_id = cp.signer.verifier.key_id_hex
    assert new_note_id != old_note_id
    assert {kid for size, kid in keys.items() if size <= rotation_seq} == {old_note_id}
    assert {kid for size, kid in keys.items() if size > rotation_seq} == {new_note_id}

    with cp.db.read() as session:
        rows = {
            r.key_id: (r.registered_seq, r.retired_seq)
            for r in session.execute(select(ServerKeyRow)).scalars()
        }
    assert rows[rotated["previous_key_id"]][1] == rotation_seq
    assert rows[new_kid] == (rotation_seq, None)
    with cp.db.read() as session:
        entry = cp.store.entry(session, rotation_seq)
    assert entry is not None and entry["action"] == "server_key.rotated"
    assert entry["payload"]["previous_key_id"] == rotated["previous_key_id"]

    listed = run_json(["server-key", "list"], env)
    assert [k["status"] for k in listed["data"]] == ["retired", "current"]

    # server-side check (chain, checkpoints under their keys, projections replayed)
    report = check_database(cp.store)
    assert report.ok, report.problems
    assert ok(["verify", "--database", "--json"], env)

    # client: verify against the server, export a bundle, verify it offline
    assert run_json(["verify"], client_env)["ok"] is True  # consistent with the old pin
    assert run_json(["checkpoint"], client_env)["key_id"] == new_note_id
    ok(["proof", "inclusion", "0"], client_env)  # against the new key's checkpoint
    bundle_path = tmp_path / "bundle.json"
    ok(["export", "--output", str(bundle_path)], client_env)
    assert run_json(["verify", "--bundle", str(bundle_path)], client_env)["ok"] is True

    # a checkpoint forged with the retired key after the rotation is refused ...
    bundle = json.loads(bundle_path.read_text())
    latest = Checkpoint.parse_body(bundle["checkpoints"][-1].rpartition("\n\n")[0] + "\n")
    forged = _forge(latest.origin, latest.size, latest.root_hash, old_pem, latest.link)
    bundle["checkpoints"].append(forged)
    report = verify_bundle(bundle)
    assert not report.ok
    assert any("not the key that was current" in p for p in report.problems), report.problems
    forged_path = tmp_path / "forged.json"
    forged_path.write_text(json.dumps(bundle))
    result = invoke(["verify", "--bundle", str(forged_path)], client_env)
    assert result.exit_code == 1, result.stdout
    # ... even when it is the only checkpoint at its size and its root is right
    bundle["checkpoints"] = [*bundle["checkpoints"][:-2], forged]
    assert not verify_bundle(bundle).ok
    # and the new key cannot sign a size from before the rotation either
    early = Checkpoint.parse_body(bundle["checkpoints"][0].rpartition("\n\n")[0] + "\n")
    assert early.size <= rotation_seq
    backdated = _forge(early.origin, early.size, early.root_hash, key_file.read_bytes(), early.link)
    bundle["checkpoints"] = [backdated, *bundle["checkpoints"][:-1]]
    report = verify_bundle(bundle)
    assert any(f"size {early.size} is signed by" in p for p in report.problems), report.problems


def test_replica_with_a_stale_key_file_refuses_to_sign(db_url: str, tmp_path: Path) -> None:
    """A replica whose own key file still holds the retired key must not sign with it."""
    settings = make_settings(db_url, tmp_path / "a")
    first = ControlPlane(settings)
    first.init()
    stale_file = tmp_path / "b" / "stale.pem"
    stale_file.parent.mkdir(parents=True)
    shutil.copy(settings.resolved_signing_key_file, stale_file)
    replica = ControlPlane(make_settings(db_url, tmp_path / "b", signing_key_file=stale_file))
    try:
        first.rotate_server_key("test")
        with pytest.raises(StoreError, match="rotated"):
            _add_principals(replica, "dave")
        _add_principals(first, "erin")  # the rotating process signs with the new key
        stale_file.write_bytes(settings.resolved_signing_key_file.read_bytes())
        _add_principals(replica, "dave")  # the new key file in place: it follows
        assert check_database(first.store).ok
    finally:
        replica.close()
        first.close()


def test_a_stale_replica_answers_503_over_http_and_records_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """Clients of a replica that cannot sign get a retryable 503 problem, never a 500."""
    settings = make_settings(db_url, tmp_path / "a")
    first = ControlPlane(settings)
    first.init()
    replica_settings = make_settings(db_url, tmp_path / "b", signing_key_file=tmp_path / "s.pem")
    shutil.copy(settings.resolved_signing_key_file, replica_settings.resolved_signing_key_file)
    replica_settings.admin_token_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.admin_token_file, replica_settings.admin_token_file)
    replica = ControlPlane(replica_settings)
    try:
        first.rotate_server_key("test")
        with first.db.read() as session:
            size = first.store.size(session)
        with live_server(replica) as server, server.admin() as http:
            answer = http.post("/v1/principals", json={"id": "dave", "kind": "user"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert "nothing was recorded" in answer.json()["detail"]
        with first.db.read() as session:
            assert first.store.size(session) == size
    finally:
        replica.close()
        first.close()


def test_rotation_refuses_a_key_file_that_is_not_current(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    cp = ControlPlane(settings)
    try:
        cp.migrate()
        with pytest.raises(Conflict, match="init"):
            cp.rotate_server_key()  # nothing registered yet
        cp.init()
        cp.rotate_server_key()
        before = settings.resolved_signing_key_file.read_bytes()
        with cp.db.read() as session:
            count = len(list(session.execute(select(ServerKeyRow)).scalars()))
        # a second process holding the first key file cannot rotate what it does not hold
        other_file = tmp_path / "other.pem"
        other = ControlPlane(make_settings(db_url, tmp_path / "o", signing_key_file=other_file))
        try:
            with pytest.raises(Conflict, match="not the ledger's current key"):
                other.rotate_server_key()
        finally:
            other.close()
        assert settings.resolved_signing_key_file.read_bytes() == before
        with cp.db.read() as session:
            assert len(list(session.execute(select(ServerKeyRow)).scalars())) == count
    finally:
        cp.close()
