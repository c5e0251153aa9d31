"""Annotator privacy on SQLite and PostgreSQL: erasure on request removes a person's mapping,
leaves an entry that names no one, and the ledger (chain, Merkle tree, projection replay) still
verifies; resolution happens only where a contract allows it, and is ledgered namelessly.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from controlplane.errors import InvalidInput, NotFound
from controlplane.governance.service import Refused
from controlplane.registry.datasets import pseudonym
from controlplane.store.integrity import check_database
from controlplane.store.models import AnnotatorPseudonymRow
from tests.cli.helpers import PREFERENCES
from tests.contracts.helpers import PROJECT, Contracts

ANN, BEA, CARLOS = "ann.lee@example.com", "b.okafor@example.com", "c.ramos@example.com"
SECRET = b"test-pseudonym-secret"  # tests.utils.databases.make_settings


def _mappings(dc: Contracts) -> dict[str, str]:
    with dc.cp.db.read() as session:
        rows = session.execute(select(AnnotatorPseudonymRow)).scalars()
        return {r.annotator: r.pseudonym for r in rows}


def _dataset(dc: Contracts) -> dict:
    version, _ = dc.cp.registry.register_dataset(
        dc.world.trainer.id, PROJECT, "prefs", PREFERENCES.read_bytes()
    )
    return version


def test_erasure_removes_the_mapping_names_no_one_and_the_ledger_still_verifies(
    dc: Contracts,
) -> None:
    version = _dataset(dc)
    before = _mappings(dc)
    assert {ANN, BEA, CARLOS} <= set(before)
    ann_alias = pseudonym(SECRET, PROJECT, ANN)
    assert before[ANN] == ann_alias
    assert ann_alias in version["metadata"]["stats"]["rows_per_annotator"]  # in the ledger

    erased = dc.cp.erasure.erase(dc.owner.principal, PROJECT, annotator=ANN)
    assert erased["mappings_erased"] == 1
    by_alias = dc.cp.erasure.erase(dc.owner.principal, PROJECT, pseudonym=before[BEA])
    assert by_alias["mappings_erased"] == 1
    again = dc.cp.erasure.erase(dc.owner.principal, PROJECT, annotator=ANN)
    assert again["mappings_erased"] == 0  # handled, recorded, harmless
    after = _mappings(dc)
    assert ANN not in after and BEA not in after and CARLOS in after

    entries = dc.world.entries("annotator.erased")
    assert [e["seq"] for e in entries] == [erased["seq"], by_alias["seq"], again["seq"]]
    for entry in entries:
        text = json.dumps(entry)
        for secret in (ANN, BEA, ann_alias, before[BEA], "ann.lee", "okafor"):
            assert secret not in text, (secret, entry)
        assert entry["actor"] == "olga"
        assert entry["subject"] == {"project": PROJECT, "kind": "annotator_mapping"}
        assert set(entry["payload"]) == {"mappings_erased", "basis"}
        assert entry["payload"]["basis"] == "right_to_erasure"
    report = check_database(dc.cp.store)  # chain + Merkle nodes + replay of every projection
    assert report.ok, report.problems

    with pytest.raises(InvalidInput, match="exactly one"):
        dc.cp.erasure.erase(dc.owner.principal, PROJECT)
    with pytest.raises(InvalidInput, match="exactly one"):
        dc.cp.erasure.erase(dc.owner.principal, PROJECT, annotator=ANN, pseudonym="x")


def test_resolution_only_where_a_contract_allows_it(dc: Contracts) -> None:
    version = _dataset(dc)
    dc.world.approve_data(version)
    rita = dc.world.person("rita", "compliance_reviewer", key=False)
    allowed = dc.envelope(
        dc.world.version(version), identity_resolution="allowed", resolvers=["rita"]
    )
    dc.register(allowed)
    forbidden = dc.envelope(dc.world.version(version), contract_id="c-2")
    dc.register(forbidden)
    carlos = pseudonym(SECRET, PROJECT, CARLOS)

    resolved = dc.cp.contracts.resolve_annotator(rita.principal, "c-1", carlos)
    assert resolved["annotator"] == CARLOS
    entry = dc.world.entries("annotator.resolved")[-1]
    assert entry["seq"] == resolved["seq"] and entry["actor"] == "rita"
    assert CARLOS not in json.dumps(entry) and carlos not in json.dumps(entry)
    assert set(entry["payload"]) == {"contract_id", "commitment"}

    for who, contract_id, alias, reason in [
        (dc.owner, "c-1", carlos, "does not name olga among its resolvers"),
        (rita, "c-2", carlos, "forbids resolving annotator identities"),
        (rita, "c-1", "anon-00000000000000000000", "not an annotator of the data"),
    ]:
        before = dc.world.size()
        with pytest.raises(Refused) as raised:
            dc.cp.contracts.resolve_annotator(who.principal, contract_id, alias)
        assert reason in raised.value.detail
        new = dc.world.entries(start=before)
        assert [e["action"] for e in new] == ["annotator.resolution_refused"]
        assert alias not in json.dumps(new[0])

    dc.cp.erasure.erase(dc.owner.principal, PROJECT, annotator=CARLOS)
    with pytest.raises(NotFound, match="erased"):
        dc.cp.contracts.resolve_annotator(rita.principal, "c-1", carlos)
    dc.cp.contracts.revoke(dc.owner.principal, "c-1", "done")
    with pytest.raises(Refused, match="revoked"):
        dc.cp.contracts.resolve_annotator(rita.principal, "c-1", carlos)
    assert check_database(dc.cp.store).ok
