"""Chained checkpoints in the store, on SQLite and PostgreSQL: what ``verify --database`` sees.

Every write transaction signs a checkpoint that links to the one before (``prev`` extension
line). The database check walks every checkpoint row and names a deleted or replaced one by its
size; ledgers whose older checkpoints predate links keep verifying.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from sqlalchemy import text

from controlplane.api.routers.ledger import bundle_chunks
from controlplane.client.verify import load_bundle_data, verify_bundle
from controlplane.core import ControlPlane
from controlplane.ledger.checkpoint import Checkpoint, CheckpointLink, split_note
from controlplane.store.integrity import check_database


def _register(cp: ControlPlane, count: int, prefix: str = "guide") -> None:
    """``count`` write transactions, so ``count`` more checkpoints."""
    for n in range(count):
        cp.registry.register_rubric("admin", "default", f"{prefix}-{n}", b"# Guide\nBe kind.\n")


def _rows(cp: ControlPlane) -> list[dict[str, Any]]:
    with cp.db.writer.connect() as conn:
        result = conn.execute(text("SELECT * FROM checkpoints ORDER BY tree_size"))
        return [dict(row) for row in result.mappings()]


def _sql(cp: ControlPlane, statement: str, **params: Any) -> None:
    with cp.db.writer.begin() as conn:
        conn.execute(text(statement), params)


def _drop_triggers(cp: ControlPlane) -> None:
    """What an attacker with database access does first (trigger names: migration 0001)."""
    if cp.db.is_sqlite:
        _sql(cp, "DROP TRIGGER checkpoints_no_update")
        _sql(cp, "DROP TRIGGER checkpoints_no_delete")
    else:
        _sql(cp, "DROP TRIGGER checkpoints_append_only ON checkpoints")


def _signed(cp: ControlPlane, size: int, link: CheckpointLink | None) -> str:
    """A valid note for ``size`` (its true root) with the given link, signed by the server."""
    with cp.db.read() as session:
        root = cp.store.root_at(session, size)
    signer = cp.store.signer
    return Checkpoint.linked(signer.origin, size, root, link).sign(
        signer.origin, signer.private_key
    )


def _link(note: str) -> CheckpointLink | None:
    return Checkpoint.parse_body(split_note(note)[0]).link


def test_every_checkpoint_links_to_the_one_before(cp: ControlPlane) -> None:
    _register(cp, 3)
    cp.rotate_server_key("test")  # a link across a key rotation is no different
    _register(cp, 2, "after")
    rows = _rows(cp)
    assert _link(rows[0]["note"]) is None, "the first checkpoint has nothing to name"
    for before, row in itertools.pairwise(rows):
        assert _link(row["note"]) == CheckpointLink.to(before["tree_size"], before["note"])
    report = check_database(cp.store, replay=False)
    assert report.ok, report.problems
    assert report.checkpoint_links_verified == len(rows) - 1


def test_a_deleted_middle_checkpoint_is_named(cp: ControlPlane) -> None:
    _register(cp, 4)
    _drop_triggers(cp)
    rows = _rows(cp)
    gone, after = rows[len(rows) // 2], rows[len(rows) // 2 + 1]
    _sql(cp, "DELETE FROM checkpoints WHERE tree_size = :s", s=gone["tree_size"])
    report = check_database(cp.store, replay=False)
    assert report.problems == [
        f"checkpoint for size {after['tree_size']} names previous checkpoint at size "
        f"{gone['tree_size']}, which is missing (the checkpoint was deleted)"
    ]


def test_a_replaced_checkpoint_is_named_even_validly_signed(cp: ControlPlane) -> None:
    """The same size and root, signed by the server's key, but linked past its predecessor:
    its own link skips a row, and its successor's link names another note."""
    _register(cp, 4)
    _drop_triggers(cp)
    rows = _rows(cp)
    index = len(rows) // 2
    size, skipped = rows[index]["tree_size"], rows[index - 1]["tree_size"]
    forged = _signed(
        cp, size, CheckpointLink.to(rows[index - 2]["tree_size"], rows[index - 2]["note"])
    )
    _sql(cp, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=forged, s=size)
    report = check_database(cp.store, replay=False)
    assert report.checkpoints_verified >= len(rows), "every note, the forged one too, is signed"
    assert report.problems == [
        f"checkpoint for size {size} names previous checkpoint at size "
        f"{rows[index - 2]['tree_size']}, but there is a checkpoint at size {skipped} between "
        "them: that one is not on the chain (inserted or replaced)",
        f"checkpoint for size {rows[index + 1]['tree_size']} names previous checkpoint at size "
        f"{size}, which differs from the one linked (the checkpoint at size {size} was "
        "replaced)",
    ]
    # an exported bundle holds every checkpoint of a small ledger: the same two links fail
    bundle = load_bundle_data(b"".join(bundle_chunks(cp)))
    offline = verify_bundle(bundle)
    assert offline.problems == report.problems


def test_a_ledger_signed_before_links_still_verifies(cp: ControlPlane) -> None:
    """Rewrite every checkpoint in the old format (no link line, re-signed by the server's
    key), as a data directory from before links has them; then write on."""
    _register(cp, 3)
    _drop_triggers(cp)
    legacy = _rows(cp)
    for row in legacy:
        _sql(
            cp,
            "UPDATE checkpoints SET note = :n WHERE tree_size = :s",
            n=_signed(cp, row["tree_size"], None),
            s=row["tree_size"],
        )
    assert check_database(cp.store, replay=False).ok
    old = _rows(cp)
    _register(cp, 2, "after")
    rows = _rows(cp)
    first_linked = rows[len(old)]
    assert _link(first_linked["note"]) == CheckpointLink.to(old[-1]["tree_size"], old[-1]["note"])
    report = check_database(cp.store, replay=False)
    assert report.ok, report.problems
    assert report.checkpoint_links_verified == 2
    bundle = load_bundle_data(b"".join(bundle_chunks(cp)))
    assert verify_bundle(bundle).ok
    # a legacy checkpoint before the last one is not linked by anything: its loss is not seen
    _sql(cp, "DELETE FROM checkpoints WHERE tree_size = :s", s=old[1]["tree_size"])
    assert check_database(cp.store, replay=False).ok
    # the last legacy one is named by the first linked one
    _sql(cp, "DELETE FROM checkpoints WHERE tree_size = :s", s=old[-1]["tree_size"])
    assert check_database(cp.store, replay=False).problems == [
        f"checkpoint for size {first_linked['tree_size']} names previous checkpoint at size "
        f"{old[-1]['tree_size']}, which is missing (the checkpoint was deleted)"
    ]


def test_a_link_stripped_after_the_chain_began_is_named(cp: ControlPlane) -> None:
    """Without the server's key, stripping a link line breaks the note's signature."""
    _register(cp, 3)
    _drop_triggers(cp)
    rows = _rows(cp)
    size = rows[-2]["tree_size"]
    stripped = "\n".join(
        line for line in rows[-2]["note"].split("\n") if not line.startswith("prev ")
    )
    _sql(cp, "UPDATE checkpoints SET note = :n WHERE tree_size = :s", n=stripped, s=size)
    problems = check_database(cp.store, replay=False).problems
    assert any(
        p.startswith(f"checkpoint for size {size} has no link to its previous checkpoint, but ")
        and p.endswith("was stripped (and the note's signature does not verify)")
        for p in problems
    ), problems
    assert any(f"previous checkpoint at size {size}, which differs" in p for p in problems)


def test_an_unlinked_checkpoint_signed_by_the_server_restarts_the_chain(cp: ControlPlane) -> None:
    """During a rolling upgrade a replica of an earlier version signs checkpoints without a
    link among linked ones: that is no tampering (it carries the server's signature), so the
    chain starts again after it instead of verification failing for good."""
    _register(cp, 3)
    _drop_triggers(cp)
    newest = _rows(cp)[-1]["tree_size"]
    _sql(  # what the earlier version signed for this size: no link line
        cp,
        "UPDATE checkpoints SET note = :n WHERE tree_size = :s",
        n=_signed(cp, newest, None),
        s=newest,
    )
    _register(cp, 2, "after")  # the next one links to it as it is stored
    report = check_database(cp.store, replay=False)
    assert report.ok, report.problems


def test_bundle_json_stays_a_sample(cp: ControlPlane) -> None:
    """Links add one line per checkpoint to a bundle, not more checkpoints."""
    _register(cp, 2)
    bundle = json.loads(b"".join(bundle_chunks(cp)))
    assert len(bundle["checkpoints"]) == len(_rows(cp))
    assert all(len(note) < 400 for note in bundle["checkpoints"])


def test_a_deleted_newest_checkpoint_is_recorded_by_the_next_write(cp: ControlPlane) -> None:
    """The next checkpoint would link past a deleted newest one, so the server, noticing its
    transaction did not begin at a checkpoint, records that in the ledger; verification fails
    on that entry from then on, in the database check and in a bundle alike."""
    _register(cp, 3)
    _drop_triggers(cp)
    newest = _rows(cp)[-1]["tree_size"]
    _sql(cp, "DELETE FROM checkpoints WHERE tree_size = :size", size=newest)
    _register(cp, 1, "later")
    with cp.db.read() as session:
        recorded = cp.store.entries(session, 0, 10_000, action="ledger.checkpoint_missing")
    assert len(recorded) == 1
    assert recorded[0]["actor"] == "system"
    assert recorded[0]["seq"] > newest  # the last entry of the write that noticed it
    assert recorded[0]["payload"]["expected_checkpoint_size"] == newest
    report = check_database(cp.store, replay=False)
    assert not report.ok
    assert any(f"checkpoint for size {newest} deleted" in problem for problem in report.problems), (
        report.problems
    )
    _register(cp, 1, "again")  # nothing more is missing: no second record
    with cp.db.read() as session:
        assert len(cp.store.entries(session, 0, 10_000, action="ledger.checkpoint_missing")) == 1


def test_a_checkpoint_signed_mid_transaction_is_no_missing_one(cp: ControlPlane) -> None:
    """``sign_checkpoint`` may be called in the middle of a transaction that then appends
    more: the checkpoint before the final one is then this transaction's own, not a gap."""
    _register(cp, 2)
    with cp.store.transaction() as tx:
        tx.append(actor="admin", action="test.first", subject={"n": 1}, payload={})
        tx.sign_checkpoint()
        tx.append(actor="admin", action="test.second", subject={"n": 2}, payload={})
    _register(cp, 1, "after")
    with cp.db.read() as session:
        assert cp.store.entries(session, 0, 10_000, action="ledger.checkpoint_missing") == []
    report = check_database(cp.store, replay=False)
    assert report.ok, report.problems
