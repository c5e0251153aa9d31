"""Registering, revoking and checking data contracts through the real services, on SQLite and
PostgreSQL: every refusal at registration is a ``contract.refused`` entry carrying the reason
the caller hears, and ``check_for_job`` refuses each way a contract can fail, without writing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.errors import Conflict, InvalidInput
from controlplane.governance.service import Refused
from controlplane.store.integrity import check_database
from tests.contracts.helpers import Contracts, altered, payload_of, resigned
from tests.governance.helpers import PinnedClock


def test_register_show_list_revoke_round_trip(dc: Contracts) -> None:
    data, rubric = dc.approved(), dc.approved("rubric", "helpfulness")
    envelope = dc.envelope(data, rubric, purpose="reward_model")
    contract, created = dc.register(envelope)
    assert created
    assert contract["id"] == "c-1" and contract["state"] == "active"
    assert contract["owner"] == "olga" and contract["key_id"] == dc.owner.key_id
    assert contract["envelope"] == envelope
    assert {s["digest"] for s in contract["subjects"]} == {data["digest"], rubric["digest"]}
    assert contract["statement"]["predicate"]["rubric"] == "gov/rubric/helpfulness@1"

    again, created = dc.register(envelope)  # a retry is harmless
    assert not created and again["registered_seq"] == contract["registered_seq"]
    with pytest.raises(Conflict, match="already registered as c-1"):
        dc.register(dc.envelope(data, purpose="ppo"))

    entries = dc.world.entries("contract.registered")
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor"] == "olga"
    assert entry["subject"] == {"project": "gov", "kind": "contract", "name": "c-1"}
    assert entry["payload"]["envelope"] == envelope  # an auditor can re-verify it offline
    assert entry["payload"]["envelope_digest"] == contract["envelope_digest"]

    with dc.cp.db.read() as session:
        listed = dc.cp.contracts.contracts(session, "gov")
        assert [c["id"] for c in listed] == ["c-1"]
        assert dc.cp.contracts.contracts(session, "gov", covers=rubric["digest"])[0]["id"] == "c-1"
        assert dc.cp.contracts.contracts(session, "gov", state="revoked") == []
        assert dc.cp.contracts.contracts(session, "gov", purpose="dpo") == []

    revoked = dc.cp.contracts.revoke(dc.owner.principal, "c-1", "consent withdrawn")
    assert revoked["state"] == "revoked" and revoked["revoked_reason"] == "consent withdrawn"
    with pytest.raises(Conflict, match="already revoked"):
        dc.cp.contracts.revoke(dc.owner.principal, "c-1", "twice")
    with dc.cp.db.read() as session:
        assert [c["id"] for c in dc.cp.contracts.contracts(session, "gov", state="revoked")] == [
            "c-1"
        ]
    report = check_database(dc.cp.store)  # chain, Merkle nodes and a replay of the projections
    assert report.ok, report.problems


def _refused(dc: Contracts, envelope: dict[str, Any], reason: str, by: Any = None) -> None:
    before = dc.world.size()
    with pytest.raises(Refused) as raised:
        dc.register(envelope, by)
    assert reason in raised.value.detail, raised.value.detail
    new = dc.world.entries(start=before)
    assert [e["action"] for e in new] == ["contract.refused"], new
    assert new[0]["payload"]["reason"] == raised.value.detail
    assert new[0]["subject"]["name"] == payload_of(envelope)["predicate"]["id"]


def test_every_refusal_at_registration_is_recorded(dc: Contracts, clk: PinnedClock) -> None:
    data = dc.approved()
    good = dc.envelope(data)
    stranger = Ed25519PrivateKey.generate()
    _refused(dc, altered(good, purpose="ppo"), "does not verify: the contract was altered")
    _refused(dc, dc.envelope(data, key=stranger), "not signed by a registered key of its owner")

    # someone else's contract: another data owner registers olga's envelope, or signs as olga
    other = dc.world.person("otto", "data_owner")
    _refused(dc, good, "only the owner registers it", by=other)
    _refused(dc, dc.envelope(data, key=other.key), "not signed by a registered key of its owner")

    revoked_key = dc.owner.key
    dc.cp.governance.revoke_key(dc.owner.principal, dc.owner.key_id, "laptop lost", is_admin=False)
    _refused(dc, dc.envelope(data, key=revoked_key), "revoked")
    dc.world.add_key(dc.owner)

    unapproved = dc.world.register("dataset", "fresh")
    _refused(dc, dc.envelope(unapproved), "dataset/fresh@1 is registered; only approved")
    missing = {**data, "version": 7}
    _refused(dc, dc.envelope(missing), "dataset/prefs@7 does not exist")
    wrong = {**data, "digest": "sha256:" + "0" * 64}
    _refused(dc, dc.envelope(wrong), f"has digest {data['digest']}, not sha256:0000")

    # malformed or expired input is a plain 422 and is not recorded
    before = dc.world.size()
    for bad, message in [
        ({"payload": "", "signatures": []}, "not a DSSE envelope"),
        ({**good, "payloadType": "application/json"}, "payloadType"),
        (resigned(good, dc.owner.key, purpose="sft"), "predicate.purpose must be one of"),
        (resigned(good, dc.owner.key, project="other"), "not in the contract's project"),
    ]:
        with pytest.raises(InvalidInput) as raised:
            dc.register(bad)
        assert message in raised.value.detail, raised.value.detail
    with pytest.raises(InvalidInput, match="is for project 'gov', not 'other'"):
        dc.cp.contracts.register(dc.owner.principal, "other", good)
    expiring = dc.envelope(data, days=1)
    clk.advance(days=2)
    with pytest.raises(InvalidInput, match="expired at"):
        dc.register(expiring)
    assert dc.world.size() == before
    assert dc.world.entries("contract.registered") == []
    # with all that behind it, the contract signed with olga's current key registers
    assert dc.register(dc.envelope(data))[1]


def test_check_for_job_decides_every_case_without_writing(dc: Contracts, clk: PinnedClock) -> None:
    data, rubric = dc.approved(), dc.approved("rubric", "helpfulness")
    inputs = (data["digest"], rubric["digest"])
    envelope = dc.envelope(data, rubric, consumers=("runner-1",), consumer_projects=["team"])
    contract, _ = dc.register(envelope)
    before = dc.world.size()

    for presented in (envelope, "c-1"):
        decision = dc.check(presented, *inputs)
        assert decision.accepted, decision
        assert decision.contract_id == "c-1" and decision.reason is None
        assert decision.envelope_digest == contract["envelope_digest"]
    assert dc.check("c-1", data["digest"].removeprefix("sha256:")).accepted  # bare hex
    assert dc.check("c-1", *inputs, consumer="someone", project="team").accepted

    stranger = Ed25519PrivateKey.generate()
    refusals = {
        "forged_signature": (altered(envelope, purpose="ppo"), {}, "does not verify"),
        "unknown_key": (resigned(envelope, stranger), {}, "not signed by a registered key"),
        "unknown_contract": ("c-404", {}, "contract 'c-404' is not registered"),
        "not_registered": (
            resigned(envelope, dc.owner.key, terms="other terms"),
            {},
            "not the contract registered as c-1",
        ),
        "malformed": ({"payload": "x"}, {}, "malformed"),
        "no_inputs": ("c-1", {"input_digests": []}, "names no input digests"),
        "not_covered": (
            "c-1",
            {"input_digests": [data["digest"], "sha256:" + "1" * 64]},
            f"does not cover input sha256:{'1' * 64}",
        ),
        "wrong_purpose": ("c-1", {"purpose": "ppo"}, "allows purpose dpo, not ppo"),
        "wrong_consumer": (
            "c-1",
            {"consumer": "runner-2", "project": "elsewhere"},
            "allows neither consumer runner-2 nor project elsewhere",
        ),
    }
    for code, (presented, overrides, reason) in refusals.items():
        decision = dc.check(presented, *inputs, **overrides)
        assert not decision.accepted and decision.code == code, (code, decision)
        assert reason in (decision.reason or ""), (code, decision.reason)
    assert dc.check(42, *inputs).code == "malformed"  # type: ignore[arg-type]
    # a forgery claiming the registered id is refused for the forgery, and named
    assert dc.check(altered(envelope, purpose="ppo"), *inputs).contract_id == "c-1"

    clk.advance(days=31)
    expired = dc.check("c-1", *inputs)
    assert expired.code == "expired" and "expired at" in (expired.reason or "")
    clk.advance(days=-31)
    assert dc.world.size() == before  # deciding never writes

    dc.world.promote(data, "deprecated")
    assert dc.check("c-1", *inputs).code == "data_not_approved"
    assert dc.check("c-1", rubric["digest"]).accepted  # the rubric alone is still approved
    size = dc.world.size()

    dc.cp.contracts.revoke(dc.owner.principal, "c-1", "consent withdrawn")
    for presented in ("c-1", envelope):
        decision = dc.check(presented, rubric["digest"])
        assert decision.code == "revoked", decision
        assert decision.reason == f"contract c-1 was revoked (seq {size}): consent withdrawn"
    dc.cp.governance.revoke_key(dc.owner.principal, dc.owner.key_id, "rotated", is_admin=False)
    for presented in ("c-1", envelope):
        assert dc.check(presented, rubric["digest"]).code == "key_revoked"
    # a new key does not revive a contract signed by the revoked one; the signature comes first
    dc.world.add_key(dc.owner)
    assert dc.check("c-1", rubric["digest"]).code == "key_revoked"
    assert dc.world.size() == size + 3  # the two revocations and the new key, nothing else


def test_a_tampered_stored_envelope_authorises_nothing(dc: Contracts) -> None:
    """If someone with database access rewrites a contract row, the stored envelope no longer
    verifies and the check refuses (fail closed)."""
    data = dc.approved()
    envelope = dc.envelope(data, purpose="evaluation")
    dc.register(envelope)
    forged = altered(envelope, purpose="dpo")
    from controlplane.store.models import DataContractRow

    with dc.cp.db.write_session() as session, session.begin():
        row = session.get(DataContractRow, "c-1")
        assert row is not None
        row.envelope = json.dumps(forged)
        row.purpose = "dpo"
    decision = dc.check("c-1", data["digest"], purpose="dpo")
    assert decision.code == "forged_signature", decision
    report = check_database(dc.cp.store)
    assert not report.ok  # the replay of the ledger disagrees with the edited table
