"""The data contract statement: what a data owner signs, byte for byte.

A contract is an in-toto Statement v1 (https://in-toto.io/Statement/v1) whose subjects are the
dataset and rubric versions it covers, by digest, and whose predicate
(``https://controlplane.dev/data-contract/v1``) says how the data may be used. The predicate's
field names follow the Open Data Contract Standard (ODCS v3) where a field has an ODCS
counterpart: ``kind: DataContract``, ``id``, ``name``, ``version``, ``description.usage`` /
``description.limitations``, ``tags``, ``createdAt`` (ODCS ``contractCreatedTs``) and
``retention`` (ODCS SLA property ``retention`` with ``value`` and ``unit``). Fields ODCS does
not have (purpose as a closed list, allowed consumers, the rubric version, annotator PII
handling, expiry, the owning principal) are ours.

The statement is RFC 8785 canonical JSON inside a DSSE envelope with payloadType
``application/vnd.in-toto+json``, so any DSSE / in-toto tool can verify the signature and
the payload has exactly one byte form. Validation is strict on construction and on parsing:
unknown fields, wrong types and values outside the closed lists raise
:class:`~controlplane.errors.InvalidInput` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock, names
from controlplane.crypto.dsse import sign_envelope
from controlplane.errors import InvalidInput
from controlplane.ledger.canonical import canonical_json, sha256_hex
from controlplane.ledger.entry import is_hex64
from controlplane.ledger.errors import MalformedError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://controlplane.dev/data-contract/v1"

PURPOSES = ("reward_model", "dpo", "ppo", "evaluation")
SUBJECT_KINDS = ("dataset", "rubric")
ANNOTATOR_ID_MODES = ("pseudonymised", "absent")
"""``pseudonymised``: rows carry keyed pseudonyms (what the registry stores); ``absent``: the
covered data has no annotator ids at all."""
RESOLUTION_MODES = ("forbidden", "allowed")
RETENTION_UNITS = ("days", "months", "years")

MAX_SUBJECTS = 1000
MAX_CONSUMERS = 100
MAX_TEXT = 20_000

_STATEMENT_FIELDS = ("_type", "subject", "predicateType", "predicate")
_REQUIRED = (
    "kind",
    "id",
    "version",
    "project",
    "owner",
    "purpose",
    "consumers",
    "rubric",
    "piiHandling",
    "retention",
    "expires",
    "createdAt",
)
_OPTIONAL = ("name", "description", "terms", "tags")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,39}")
_SUBJECT_NAME = re.compile(
    r"(?P<project>[^/]+)/(?P<kind>[^/]+)/(?P<name>[^/@]+)@(?P<version>[1-9][0-9]{0,8})"
)
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


def _bad(message: str) -> InvalidInput:
    return InvalidInput(f"contract statement: {message}")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC at second precision (``2027-01-31T12:00:00Z``), as contracts spell time."""
    if moment.tzinfo is None:
        raise _bad("times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise _bad(f"{field} must be an RFC 3339 UTC time like 2027-01-31T12:00:00Z, got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{field} is not a valid time: {value!r}") from None


@dataclass(frozen=True, order=True)
class Subject:
    """One covered version: ``<project>/<kind>/<name>@<version>`` with its SHA-256."""

    project: str
    kind: str
    name: str
    version: int
    sha256: str

    @property
    def full_name(self) -> str:
        return f"{self.project}/{self.kind}/{self.name}@{self.version}"

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}@{self.version}"

    @property
    def digest(self) -> str:
        """The registry's spelling, ``sha256:<hex>``."""
        return f"sha256:{self.sha256}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.full_name, "digest": {"sha256": self.sha256}}

    @classmethod
    def parse(cls, value: Any, position: int) -> Subject:
        where = f"subject[{position}]"
        if not isinstance(value, dict):
            raise _bad(f"{where} must be an object with name and digest")
        _only(value, ("name", "digest"), ("name", "digest"), where)
        name = value["name"]
        match = _SUBJECT_NAME.fullmatch(name) if isinstance(name, str) else None
        if match is None:
            raise _bad(f"{where}.name must be <project>/<kind>/<name>@<version>, got {name!r}")
        project = _named(names.project, match["project"], f"{where}.name")
        if match["kind"] not in SUBJECT_KINDS:
            raise _bad(
                f"{where}.name: a contract covers {' and '.join(SUBJECT_KINDS)} versions, "
                f"not {match['kind']!r}"
            )
        artifact = _named(names.artifact_name, match["name"], f"{where}.name")
        digest = value["digest"]
        if not isinstance(digest, dict):
            raise _bad(f"{where}.digest must be an object like {{'sha256': '<hex>'}}")
        _only(digest, ("sha256",), ("sha256",), f"{where}.digest")
        if not is_hex64(digest["sha256"]):
            raise _bad(f"{where}.digest.sha256 must be 64 lowercase hex characters")
        return cls(project, match["kind"], artifact, int(match["version"]), digest["sha256"])


def _only(
    data: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str], where: str
) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise _bad(
            f"unknown field {where}.{unknown[0]} (allowed: {', '.join(allowed)})"
            if where
            else f"unknown field {unknown[0]} (allowed: {', '.join(allowed)})"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise _bad(f"{where + '.' if where else ''}{missing[0]} is required")


def _named(check: Any, value: Any, where: str) -> str:
    try:
        return str(check(value))
    except InvalidInput as exc:
        raise _bad(f"{where}: {exc.detail}") from None


def _text(value: Any, where: str, limit: int = MAX_TEXT, *, empty: bool = True) -> str:
    if not isinstance(value, str) or "\x00" in value:
        raise _bad(f"{where} must be a string")
    if len(value) > limit:
        raise _bad(f"{where} is longer than {limit} characters")
    if not empty and not value.strip():
        raise _bad(f"{where} must not be empty")
    return value


def _choice(value: Any, options: Sequence[str], where: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise _bad(f"{where} must be one of {', '.join(options)}; got {value!r}")
    return value


def _id_list(value: Any, check: Any, where: str, limit: int = MAX_CONSUMERS) -> list[str]:
    if not isinstance(value, list):
        raise _bad(f"{where} must be a list")
    if len(value) > limit:
        raise _bad(f"{where} has more than {limit} entries")
    out = [_named(check, item, f"{where}[{i}]") for i, item in enumerate(value)]
    if len(set(out)) != len(out):
        raise _bad(f"{where} lists an entry twice")
    return out


@dataclass(frozen=True)
class ContractStatement:
    """A validated contract statement. Build with :func:`build` or :func:`validate`."""

    subjects: tuple[Subject, ...]
    predicate: dict[str, Any]

    # -- the predicate, typed --------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.predicate["id"])

    @property
    def project(self) -> str:
        return str(self.predicate["project"])

    @property
    def owner(self) -> str:
        return str(self.predicate["owner"])

    @property
    def purpose(self) -> str:
        return str(self.predicate["purpose"])

    @property
    def consumer_principals(self) -> tuple[str, ...]:
        return tuple(self.predicate["consumers"].get("principals", ()))

    @property
    def consumer_projects(self) -> tuple[str, ...]:
        return tuple(self.predicate["consumers"].get("projects", ()))

    @property
    def rubric(self) -> str | None:
        return self.predicate["rubric"]  # type: ignore[no-any-return]

    @property
    def expires(self) -> datetime:
        return parse_time(self.predicate["expires"], "predicate.expires")

    @property
    def created_at(self) -> datetime:
        return parse_time(self.predicate["createdAt"], "predicate.createdAt")

    @property
    def identity_resolution(self) -> str:
        return str(self.predicate["piiHandling"]["identityResolution"])

    @property
    def resolvers(self) -> tuple[str, ...]:
        return tuple(self.predicate["piiHandling"].get("resolvers", ()))

    # -- questions -------------------------------------------------------------------------------

    def covering(self, digest: str) -> Subject | None:
        """The subject whose digest is ``digest`` (``sha256:<hex>``), if any."""
        for subject in self.subjects:
            if subject.digest == digest:
                return subject
        return None

    def allows_consumer(self, consumer: str, project: str) -> bool:
        return consumer in self.consumer_principals or project in self.consumer_projects

    # -- bytes -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_dict() for s in self.subjects],
            "predicateType": PREDICATE_TYPE,
            "predicate": self.predicate,
        }

    def payload(self) -> bytes:
        """The canonical bytes that are signed."""
        return canonical_json(self.to_dict())


def validate(statement: Any, *, now: datetime | None) -> ContractStatement:
    """Check a statement strictly. ``now`` given: the contract must not have expired.

    Parsing a contract that was registered earlier passes ``now=None``: whether it has expired
    since is a decision for the caller, not a malformed statement.
    """
    if not isinstance(statement, dict):
        raise _bad("the statement must be a JSON object")
    _only(statement, _STATEMENT_FIELDS, _STATEMENT_FIELDS, "")
    if statement["_type"] != STATEMENT_TYPE:
        raise _bad(f"_type must be {STATEMENT_TYPE}, got {statement['_type']!r}")
    if statement["predicateType"] != PREDICATE_TYPE:
        raise _bad(f"predicateType must be {PREDICATE_TYPE}, got {statement['predicateType']!r}")
    raw_subjects = statement["subject"]
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise _bad("subject must be a non-empty list")
    if len(raw_subjects) > MAX_SUBJECTS:
        raise _bad(f"subject has more than {MAX_SUBJECTS} entries")
    subjects = tuple(Subject.parse(s, i) for i, s in enumerate(raw_subjects))
    full_names = [s.full_name for s in subjects]
    if len(set(full_names)) != len(full_names):
        raise _bad("subject lists a version twice")
    predicate = _predicate(statement["predicate"], subjects, now)
    return ContractStatement(subjects, predicate)


def _predicate(value: Any, subjects: tuple[Subject, ...], now: datetime | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad("predicate must be an object")
    p = "predicate"
    _only(value, (*_REQUIRED, *_OPTIONAL), _REQUIRED, p)
    if value["kind"] != "DataContract":
        raise _bad(f"{p}.kind must be DataContract, got {value['kind']!r}")
    if not isinstance(value["id"], str) or not _ID.fullmatch(value["id"]):
        raise _bad(
            f"{p}.id must be 1-100 of A-Z a-z 0-9 . _ - starting with a letter or digit "
            f"(e.g. a UUID), got {value['id']!r}"
        )
    if not isinstance(value["version"], str) or not _VERSION.fullmatch(value["version"]):
        raise _bad(f"{p}.version must be a version string like 1.0.0, got {value['version']!r}")
    project = _named(names.project, value["project"], f"{p}.project")
    _named(names.principal_id, value["owner"], f"{p}.owner")
    _choice(value["purpose"], PURPOSES, f"{p}.purpose")

    foreign = [s.full_name for s in subjects if s.project != project]
    if foreign:
        raise _bad(f"subject {foreign[0]} is not in the contract's project {project!r}")
    if not any(s.kind == "dataset" for s in subjects):
        raise _bad("a contract covers at least one dataset version")

    consumers = value["consumers"]
    if not isinstance(consumers, dict):
        raise _bad(f"{p}.consumers must be an object with principals and/or projects")
    _only(consumers, ("principals", "projects"), (), f"{p}.consumers")
    principals = _id_list(
        consumers.get("principals", []), names.principal_id, f"{p}.consumers.principals"
    )
    projects = _id_list(consumers.get("projects", []), names.project, f"{p}.consumers.projects")
    if not principals and not projects:
        raise _bad(f"{p}.consumers must allow at least one principal or project")

    rubric = value["rubric"]
    if rubric is not None:
        rubric_subject = next((s for s in subjects if s.full_name == rubric), None)
        if rubric_subject is None or rubric_subject.kind != "rubric":
            raise _bad(
                f"{p}.rubric must name a rubric version among the subjects "
                f"(<project>/rubric/<name>@<version>), got {rubric!r}"
            )

    pii = value["piiHandling"]
    if not isinstance(pii, dict):
        raise _bad(f"{p}.piiHandling must be an object")
    _only(
        pii,
        ("annotatorIds", "identityResolution", "resolvers", "notes"),
        ("annotatorIds", "identityResolution"),
        f"{p}.piiHandling",
    )
    ids = _choice(pii["annotatorIds"], ANNOTATOR_ID_MODES, f"{p}.piiHandling.annotatorIds")
    resolution = _choice(
        pii["identityResolution"], RESOLUTION_MODES, f"{p}.piiHandling.identityResolution"
    )
    resolvers = _id_list(pii.get("resolvers", []), names.principal_id, f"{p}.piiHandling.resolvers")
    if resolution == "allowed" and not resolvers:
        raise _bad(f"{p}.piiHandling.resolvers must name who may resolve annotator identities")
    if resolution == "forbidden" and resolvers:
        raise _bad(f"{p}.piiHandling.resolvers must be empty when identityResolution is forbidden")
    if ids == "absent" and resolution == "allowed":
        raise _bad(f"{p}.piiHandling: there is nothing to resolve when annotatorIds is absent")
    if "notes" in pii:
        _text(pii["notes"], f"{p}.piiHandling.notes")

    retention = value["retention"]
    if not isinstance(retention, dict):
        raise _bad(f"{p}.retention must be an object like {{'value': 90, 'unit': 'days'}}")
    _only(retention, ("value", "unit"), ("value", "unit"), f"{p}.retention")
    amount = retention["value"]
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= 36_500:
        raise _bad(f"{p}.retention.value must be an integer from 1 to 36500, got {amount!r}")
    _choice(retention["unit"], RETENTION_UNITS, f"{p}.retention.unit")

    created = parse_time(value["createdAt"], f"{p}.createdAt")
    expires = parse_time(value["expires"], f"{p}.expires")
    if expires <= created:
        raise _bad(f"{p}.expires ({value['expires']}) must be after createdAt")
    if now is not None and expires <= now:
        raise _bad(f"{p}.expires is in the past ({value['expires']})")

    if "name" in value:
        _text(value["name"], f"{p}.name", 200, empty=False)
    if "description" in value:
        description = value["description"]
        if not isinstance(description, dict):
            raise _bad(f"{p}.description must be an object with usage and/or limitations")
        _only(description, ("usage", "limitations"), (), f"{p}.description")
        for key, text in description.items():
            _text(text, f"{p}.description.{key}")
    if "terms" in value:
        _text(value["terms"], f"{p}.terms")
    if "tags" in value:
        tags = value["tags"]
        if not isinstance(tags, list) or len(tags) > 50:
            raise _bad(f"{p}.tags must be a list of at most 50 strings")
        for i, tag in enumerate(tags):
            _text(tag, f"{p}.tags[{i}]", 100, empty=False)
    try:
        canonical_json(value)
    except MalformedError as exc:
        raise _bad(f"{p}: {exc}") from None
    return json.loads(json.dumps(value))  # a private deep copy


def build(
    *,
    contract_id: str,
    project: str,
    owner: str,
    purpose: str,
    subjects: Iterable[Subject],
    consumers: Sequence[str] = (),
    consumer_projects: Sequence[str] = (),
    rubric: str | None = None,
    annotator_ids: str = "pseudonymised",
    identity_resolution: str = "forbidden",
    resolvers: Sequence[str] = (),
    retention_value: int = 90,
    retention_unit: str = "days",
    expires: datetime,
    created_at: datetime,
    version: str = "1.0.0",
    name: str | None = None,
    usage: str | None = None,
    limitations: str | None = None,
    terms: str | None = None,
    tags: Sequence[str] = (),
) -> ContractStatement:
    """A new statement from its parts, validated; ``expires`` must be in the future."""
    predicate: dict[str, Any] = {
        "kind": "DataContract",
        "id": contract_id,
        "version": version,
        "project": project,
        "owner": owner,
        "purpose": purpose,
        "consumers": {"principals": list(consumers), "projects": list(consumer_projects)},
        "rubric": rubric,
        "piiHandling": {
            "annotatorIds": annotator_ids,
            "identityResolution": identity_resolution,
            "resolvers": list(resolvers),
        },
        "retention": {"value": retention_value, "unit": retention_unit},
        "expires": format_time(expires),
        "createdAt": format_time(created_at),
    }
    if name is not None:
        predicate["name"] = name
    description = {
        k: v for k, v in (("usage", usage), ("limitations", limitations)) if v is not None
    }
    if description:
        predicate["description"] = description
    if terms is not None:
        predicate["terms"] = terms
    if tags:
        predicate["tags"] = list(tags)
    raw = {
        "_type": STATEMENT_TYPE,
        "subject": [s.to_dict() for s in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }
    return validate(raw, now=clock.now())


def parse_payload(payload: bytes, *, now: datetime | None = None) -> ContractStatement:
    """The statement inside an envelope; the payload must be its canonical JSON."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise _bad("the signed payload is not JSON") from None
    statement = validate(data, now=now)
    if canonical_json(data) != payload:
        raise _bad("the signed payload is not RFC 8785 canonical JSON")
    return statement


def sign(statement: ContractStatement, key: Ed25519PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over the canonical statement, signed on the owner's machine."""
    return sign_envelope(PAYLOAD_TYPE, statement.payload(), key)


def envelope_digest(envelope: Mapping[str, Any]) -> str:
    """``sha256:`` of the envelope's canonical JSON: how a registered envelope is named."""
    try:
        return "sha256:" + sha256_hex(canonical_json(dict(envelope)))
    except MalformedError as exc:
        raise InvalidInput(f"envelope cannot be canonicalised: {exc}") from None


__all__ = [
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "PURPOSES",
    "STATEMENT_TYPE",
    "ContractStatement",
    "Subject",
    "build",
    "envelope_digest",
    "format_time",
    "parse_payload",
    "parse_time",
    "sign",
    "validate",
]
