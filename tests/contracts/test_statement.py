"""The contract statement is validated strictly, on construction and on parsing (no database).

Each malformed statement is refused with :class:`InvalidInput` whose message names the field;
a valid one round-trips through its canonical bytes and a DSSE envelope.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.contracts import statement as st
from controlplane.contracts.signatures import SignatureProblem, check_signature, open_envelope
from controlplane.crypto.dsse import pae
from controlplane.crypto.keys import key_id
from controlplane.errors import InvalidInput
from controlplane.ledger.canonical import canonical_json
from tests.governance.helpers import pinned_clock

NOW = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
DATASET = st.Subject("gov", "dataset", "prefs", 1, "ab" * 32)
RUBRIC = st.Subject("gov", "rubric", "helpfulness", 2, "cd" * 32)


def good() -> dict[str, Any]:
    with pinned_clock(NOW):
        return st.build(
            contract_id="c-1",
            project="gov",
            owner="olga",
            purpose="reward_model",
            subjects=[DATASET, RUBRIC],
            consumers=["runner-1"],
            consumer_projects=["gov"],
            rubric=RUBRIC.full_name,
            identity_resolution="allowed",
            resolvers=["rita"],
            expires=NOW + timedelta(days=30),
            created_at=NOW,
            name="prefs for the reward model",
            usage="reward model training only",
            terms="no redistribution",
            tags=["rlhf"],
        ).to_dict()


def test_a_valid_statement_has_the_in_toto_shape_and_round_trips() -> None:
    data = good()
    assert data["_type"] == "https://in-toto.io/Statement/v1"
    assert data["predicateType"] == "https://controlplane.dev/data-contract/v1"
    assert data["subject"][0] == {"name": "gov/dataset/prefs@1", "digest": {"sha256": "ab" * 32}}
    predicate = data["predicate"]
    assert predicate["kind"] == "DataContract"  # ODCS fundamentals
    assert predicate["retention"] == {"value": 90, "unit": "days"}
    assert predicate["expires"] == "2031-04-02T09:00:00Z"
    parsed = st.validate(data, now=NOW)
    assert parsed.id == "c-1" and parsed.owner == "olga" and parsed.purpose == "reward_model"
    assert parsed.covering(DATASET.digest) == DATASET
    assert parsed.covering("sha256:" + "00" * 32) is None
    assert parsed.allows_consumer("runner-1", "elsewhere")
    assert parsed.allows_consumer("someone", "gov")
    assert not parsed.allows_consumer("someone", "elsewhere")
    assert parsed.resolvers == ("rita",)

    key = Ed25519PrivateKey.generate()
    envelope = st.sign(parsed, key)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(envelope["payload"]) == canonical_json(data)
    opened = open_envelope(envelope)
    assert opened.statement.to_dict() == data
    check_signature(opened, {key_id(key.public_key()): key.public_key()})


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value

    return change


DROP = KeyError
CASES = [
    ("unknown top-level field", _set("extra", 1), "unknown field extra"),
    ("wrong _type", _set("_type", "https://in-toto.io/Statement/v0.1"), "_type must be"),
    ("foreign predicate", _set("predicateType", "https://slsa.dev/provenance/v1"), "predicateType"),
    ("no subjects", _set("subject", []), "subject must be a non-empty list"),
    ("subject field", _set("subject.0.uri", "s3://x"), "unknown field subject[0].uri"),
    ("subject name", _set("subject.0.name", "prefs@1"), "subject[0].name must be"),
    ("subject kind", _set("subject.0.name", "gov/policy/p@1"), "not 'policy'"),
    ("subject digest", _set("subject.0.digest", {"sha256": "AB" * 32}), "64 lowercase hex"),
    ("subject algorithm", _set("subject.0.digest", {"sha512": "ab"}), "digest.sha512"),
    ("other project", _set("subject.0.name", "other/dataset/prefs@1"), "not in the contract's"),
    ("unknown predicate field", _set("predicate.price", 3), "unknown field predicate.price"),
    ("missing owner", _set("predicate.owner", DROP), "predicate.owner is required"),
    ("purpose", _set("predicate.purpose", "sft"), "predicate.purpose must be one of"),
    ("purpose type", _set("predicate.purpose", ["dpo"]), "predicate.purpose must be one of"),
    ("kind", _set("predicate.kind", "Contract"), "predicate.kind must be DataContract"),
    ("id", _set("predicate.id", "a b"), "predicate.id must be"),
    ("owner", _set("predicate.owner", "Olga Smith"), "predicate.owner"),
    ("consumers type", _set("predicate.consumers", ["runner-1"]), "predicate.consumers must be"),
    (
        "no consumers",
        _set("predicate.consumers", {"principals": [], "projects": []}),
        "at least one principal or project",
    ),
    ("consumer id", _set("predicate.consumers.principals", [7]), "consumers.principals[0]"),
    ("rubric not a subject", _set("predicate.rubric", "gov/rubric/x@1"), "predicate.rubric"),
    ("rubric is a dataset", _set("predicate.rubric", "gov/dataset/prefs@1"), "predicate.rubric"),
    (
        "resolution without resolvers",
        _set("predicate.piiHandling.resolvers", []),
        "must name who may resolve",
    ),
    (
        "resolvers when forbidden",
        _set("predicate.piiHandling.identityResolution", "forbidden"),
        "must be empty",
    ),
    ("annotator ids", _set("predicate.piiHandling.annotatorIds", "clear"), "annotatorIds"),
    ("retention type", _set("predicate.retention.value", "90"), "retention.value"),
    ("retention bool", _set("predicate.retention.value", True), "retention.value"),
    ("retention unit", _set("predicate.retention.unit", "weeks"), "retention.unit"),
    ("expires format", _set("predicate.expires", "2031-04-02"), "predicate.expires must be"),
    ("expires zone", _set("predicate.expires", "2031-04-02T09:00:00+01:00"), "UTC"),
    ("expires before creation", _set("predicate.expires", "2031-03-01T00:00:00Z"), "after"),
    ("terms type", _set("predicate.terms", {"a": 1}), "predicate.terms must be a string"),
    ("description field", _set("predicate.description.purpose", "x"), "description.purpose"),
    ("tags type", _set("predicate.tags", "rlhf"), "predicate.tags"),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_statements_are_refused_naming_the_field(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    data = good()
    change(data)
    with pytest.raises(InvalidInput) as raised:
        st.validate(data, now=NOW)
    assert expected in raised.value.detail, raised.value.detail
    assert raised.value.detail.startswith("contract statement: ")


def test_expiry_in_the_past_is_refused_on_construction_but_not_when_parsing_a_stored_one() -> None:
    data = good()
    later = NOW + timedelta(days=31)
    with pytest.raises(InvalidInput, match=r"predicate\.expires is in the past"):
        st.validate(data, now=later)
    assert st.validate(data, now=None).id == "c-1"  # an old contract still parses
    with pinned_clock(later), pytest.raises(InvalidInput, match="in the past"):
        st.build(
            contract_id="c-2",
            project="gov",
            owner="olga",
            purpose="dpo",
            subjects=[DATASET],
            consumers=["runner-1"],
            expires=NOW + timedelta(days=30),
            created_at=NOW,
        )


def test_a_dataset_is_required_and_duplicates_are_refused() -> None:
    data = good()
    data["subject"] = [data["subject"][1]]
    data["predicate"]["rubric"] = None
    with pytest.raises(InvalidInput, match="at least one dataset"):
        st.validate(data, now=NOW)
    data = good()
    data["subject"].append(copy.deepcopy(data["subject"][0]))
    with pytest.raises(InvalidInput, match="twice"):
        st.validate(data, now=NOW)


def test_envelopes_are_checked_strictly() -> None:
    key = Ed25519PrivateKey.generate()
    statement = st.validate(good(), now=NOW)
    envelope = st.sign(statement, key)
    not_canonical = json.dumps(good(), indent=1).encode()
    cases = {
        "not a DSSE envelope": "a string",
        "payloadType": {**envelope, "payloadType": "application/json"},
        "exactly one signature": {**envelope, "signatures": envelope["signatures"] * 2},
        "unknown envelope field": {**envelope, "extra": 1},
        "canonical JSON": {**envelope, "payload": base64.b64encode(not_canonical).decode()},
        "not JSON": {**envelope, "payload": base64.b64encode(b"\xff\xfe").decode()},
    }
    for expected, bad in cases.items():
        with pytest.raises(InvalidInput) as raised:
            open_envelope(bad)
        assert expected in raised.value.detail, (expected, raised.value.detail)


def test_signature_problems_are_told_apart() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    kid = key_id(key.public_key())
    statement = st.validate(good(), now=NOW)
    envelope = st.sign(statement, key)
    opened = open_envelope(envelope)
    with pytest.raises(SignatureProblem) as raised:
        check_signature(opened, {key_id(other.public_key()): other.public_key()})
    assert raised.value.code == "unknown_key"
    with pytest.raises(SignatureProblem) as raised:
        check_signature(opened, {kid: other.public_key()})  # the id is known, the key is not it
    assert raised.value.code == "forged_signature"
    with pytest.raises(SignatureProblem) as raised:
        check_signature(opened, {kid: key.public_key()}, {kid: "at seq 9"})
    assert raised.value.code == "key_revoked"
    assert "at seq 9" in raised.value.reason


def test_an_independent_dsse_implementation_verifies_contract_envelopes() -> None:
    """securesystemslib's DSSE (the in-toto reference tooling) accepts our envelopes and
    rejects an altered one: the format is standard, not merely self-consistent."""
    sslib_dsse = pytest.importorskip("securesystemslib.dsse")
    sslib_signer = pytest.importorskip("securesystemslib.signer")
    from securesystemslib.exceptions import VerificationError

    private = Ed25519PrivateKey.generate()
    envelope = st.sign(st.validate(good(), now=NOW), private)
    key = sslib_signer.SSlibKey.from_crypto(
        private.public_key(), keyid=key_id(private.public_key())
    )
    parsed = sslib_dsse.Envelope.from_dict(copy.deepcopy(envelope))
    assert parsed.payload_type == st.PAYLOAD_TYPE
    assert parsed.pae() == pae(st.PAYLOAD_TYPE, canonical_json(good()))  # same bytes signed
    assert set(parsed.verify([key], 1)) == {key_id(private.public_key())}

    forged = copy.deepcopy(envelope)
    statement = json.loads(base64.b64decode(forged["payload"]))
    statement["predicate"]["purpose"] = "ppo"
    forged["payload"] = base64.b64encode(canonical_json(statement)).decode()
    with pytest.raises(VerificationError):
        sslib_dsse.Envelope.from_dict(forged).verify([key], 1)
