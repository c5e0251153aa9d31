"""SQLModel tables. Created only by Alembic migrations (``migrations/``).

``ledger_entries``, ``merkle_nodes`` and ``checkpoints`` are append-only (database triggers
refuse UPDATE and DELETE). Everything else is a projection of ledger entries written in the
same transaction as the entry, except ``api_tokens`` (secret material) and
``annotator_pseudonyms`` (personal data), which must never enter the immutable ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None


def _tz() -> Column:  # type: ignore[type-arg]
    return Column(UTCDateTime(), nullable=False)


class LedgerEntryRow(SQLModel, table=True):
    """One ledger entry. ``subject`` and ``payload`` hold RFC 8785 canonical JSON text, so the
    stored bytes are exactly the hashed bytes. ``subject_kind``/``subject_name``/``project``
    are copies of subject fields kept only for indexed filtering."""

    __tablename__ = "ledger_entries"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    timestamp: str = Field(sa_column=Column(String(32), nullable=False))
    actor: str = Field(sa_column=Column(String(200), nullable=False, index=True))
    action: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    subject: str = Field(sa_column=Column(Text, nullable=False))
    payload: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    entry_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    subject_kind: str | None = Field(default=None, sa_column=Column(String(50), index=True))
    subject_name: str | None = Field(default=None, sa_column=Column(String(300), index=True))
    project: str | None = Field(default=None, sa_column=Column(String(100), index=True))


class MerkleNodeRow(SQLModel, table=True):
    """Hash of the perfect subtree over leaves ``[idx * 2**level, (idx + 1) * 2**level)``."""

    __tablename__ = "merkle_nodes"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


class CheckpointRow(SQLModel, table=True):
    """A signed tree head (C2SP signed note). Every one is kept."""

    __tablename__ = "checkpoints"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root_hash: str = Field(sa_column=Column(String(64), nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    created_at: datetime = Field(sa_column=_tz())


class ServerKeyRow(SQLModel, table=True):
    """Checkpoint signing keys, current and retired (projection of ``server_key.*``)."""

    __tablename__ = "server_keys"

    key_id: str = Field(sa_column=Column(String(64), primary_key=True))
    note_name: str = Field(sa_column=Column(String(200), nullable=False))
    public_key: str = Field(sa_column=Column(String(100), nullable=False))
    verifier: str = Field(sa_column=Column(String(400), nullable=False))
    registered_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    retired_seq: int | None = Field(default=None, sa_column=Column(BigInteger))


class PrincipalRow(SQLModel, table=True):
    """A person, CI system or runner (projection of ``principal.*``)."""

    __tablename__ = "principals"

    id: str = Field(sa_column=Column(String(100), primary_key=True))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    display_name: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(sa_column=_tz())
    created_by: str = Field(sa_column=Column(String(100), nullable=False))
    disabled: bool = Field(default=False, nullable=False)


class ApiTokenRow(SQLModel, table=True):
    """A bearer token; only its SHA-256 is stored. Issuance and revocation are ledgered by id."""

    __tablename__ = "api_tokens"

    id: str = Field(sa_column=Column(String(40), primary_key=True))
    principal_id: str = Field(
        sa_column=Column(String(100), ForeignKey("principals.id"), nullable=False, index=True)
    )
    token_hash: str = Field(sa_column=Column(String(64), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime = Field(sa_column=_tz())
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class RoleGrantRow(SQLModel, table=True):
    """A role in a project (``*`` for every project); projection of ``role.*``."""

    __tablename__ = "role_grants"

    principal_id: str = Field(
        sa_column=Column(String(100), ForeignKey("principals.id"), primary_key=True)
    )
    role: str = Field(sa_column=Column(String(50), primary_key=True))
    project: str = Field(sa_column=Column(String(100), primary_key=True))
    granted_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class ArtifactRow(SQLModel, table=True):
    """``kind/name`` in a project (projection of ``artifact.version_registered``)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("project", "kind", "name"),)

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    project: str = Field(sa_column=Column(String(100), nullable=False))
    kind: str = Field(sa_column=Column(String(30), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    latest_version: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(sa_column=_tz())
    created_by: str = Field(sa_column=Column(String(100), nullable=False))


class ArtifactVersionRow(SQLModel, table=True):
    """An immutable version of an artifact."""

    __tablename__ = "artifact_versions"
    __table_args__ = (
        UniqueConstraint("artifact_id", "version"),
        Index("ix_artifact_versions_lookup", "project", "kind", "name", "version"),
    )

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    artifact_id: int = Field(sa_column=Column(Integer, ForeignKey("artifacts.id"), nullable=False))
    project: str = Field(sa_column=Column(String(100), nullable=False))
    kind: str = Field(sa_column=Column(String(30), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    digest: str = Field(sa_column=Column(String(71), nullable=False, index=True))
    uri: str = Field(sa_column=Column(Text, nullable=False))
    metadata_json: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(sa_column=Column(String(100), nullable=False))
    created_at: datetime = Field(sa_column=_tz())
    ledger_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    stage: str = Field(
        default="registered",
        sa_column=Column(String(30), nullable=False, server_default="registered", index=True),
    )
    stage_seq: int | None = Field(default=None, sa_column=Column(BigInteger))


class LineageEdgeRow(SQLModel, table=True):
    """``child --relation--> parent``; parents exist before children, so no cycles."""

    __tablename__ = "lineage_edges"

    child_id: int = Field(
        sa_column=Column(Integer, ForeignKey("artifact_versions.id"), primary_key=True)
    )
    parent_id: int = Field(
        sa_column=Column(Integer, ForeignKey("artifact_versions.id"), primary_key=True, index=True)
    )
    relation: str = Field(sa_column=Column(String(30), primary_key=True))


class AnnotatorPseudonymRow(SQLModel, table=True):
    """Pseudonym → person, kept outside the ledger so it can be erased on request."""

    __tablename__ = "annotator_pseudonyms"

    pseudonym: str = Field(sa_column=Column(String(80), primary_key=True))
    project: str = Field(sa_column=Column(String(100), nullable=False))
    annotator: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=_tz())


class SigningKeyRow(SQLModel, table=True):
    """A principal's Ed25519 sign-off key (projection of ``signing_key.*``)."""

    __tablename__ = "signing_keys"

    key_id: str = Field(sa_column=Column(String(64), primary_key=True))
    principal_id: str = Field(
        sa_column=Column(String(100), ForeignKey("principals.id"), nullable=False, index=True)
    )
    public_key: str = Field(sa_column=Column(String(100), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    registered_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    registered_at: datetime = Field(sa_column=_tz())
    revoked_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class PromotionRequestRow(SQLModel, table=True):
    """A request to move a version to a stage; its id is the seq of the entry that opened it."""

    __tablename__ = "promotion_requests"
    __table_args__ = (Index("ix_promotion_requests_queue", "project", "state"),)

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    project: str = Field(sa_column=Column(String(100), nullable=False))
    kind: str = Field(sa_column=Column(String(30), nullable=False))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    from_stage: str = Field(sa_column=Column(String(30), nullable=False))
    target_stage: str = Field(sa_column=Column(String(30), nullable=False))
    traffic_share: float | None = Field(default=None, sa_column=Column(Float))
    justification: str = Field(sa_column=Column(Text, nullable=False))
    requester: str = Field(sa_column=Column(String(100), nullable=False))
    rules_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    state: str = Field(sa_column=Column(String(20), nullable=False))
    opened_at: datetime = Field(sa_column=_tz())
    expires_at: datetime = Field(sa_column=_tz())
    closed_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    closed_reason: str | None = Field(default=None, sa_column=Column(Text))


class SignoffRow(SQLModel, table=True):
    """One approver's signed decision on a request (the DSSE envelope is kept verbatim)."""

    __tablename__ = "signoffs"

    request_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("promotion_requests.id"), primary_key=True)
    )
    signer: str = Field(sa_column=Column(String(100), primary_key=True))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    decision: str = Field(sa_column=Column(String(10), nullable=False))
    comment: str = Field(sa_column=Column(Text, nullable=False))
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    signed_at: str = Field(sa_column=Column(String(40), nullable=False))


class DataContractRow(SQLModel, table=True):
    """A registered data contract (projection of ``contract.registered`` / ``.revoked``).

    ``envelope`` is the DSSE envelope as registered (canonical JSON), so the row can be
    re-verified without the ledger; ``envelope_digest`` is ``sha256:`` of those bytes.
    """

    __tablename__ = "data_contracts"

    id: str = Field(sa_column=Column(String(100), primary_key=True))
    project: str = Field(sa_column=Column(String(100), nullable=False, index=True))
    owner: str = Field(sa_column=Column(String(100), nullable=False))
    key_id: str = Field(sa_column=Column(String(64), nullable=False))
    purpose: str = Field(sa_column=Column(String(30), nullable=False))
    envelope: str = Field(sa_column=Column(Text, nullable=False))
    envelope_digest: str = Field(sa_column=Column(String(71), nullable=False, unique=True))
    expires_at: datetime = Field(sa_column=_tz())
    registered_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    registered_at: datetime = Field(sa_column=_tz())
    revoked_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    revoked_reason: str | None = Field(default=None, sa_column=Column(Text))


class DataContractSubjectRow(SQLModel, table=True):
    """One subject (dataset or rubric version, by digest) covered by a data contract."""

    __tablename__ = "data_contract_subjects"

    contract_id: str = Field(
        sa_column=Column(String(100), ForeignKey("data_contracts.id"), primary_key=True)
    )
    name: str = Field(sa_column=Column(String(400), primary_key=True))
    kind: str = Field(sa_column=Column(String(30), nullable=False))
    digest: str = Field(sa_column=Column(String(71), nullable=False, index=True))


class JobRow(SQLModel, table=True):
    """A training job (projection of ``job.*``); its id is the seq of its ``job.queued`` entry.

    ``spec_json`` holds the resolved inputs (refs with their digests at queue time), the
    hyperparameters and the output name, as queued. Lease renewals are not here: they live in
    ``job_leases``, which is operational state, not a projection.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_queue", "project", "state", "id"),)

    id: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    project: str = Field(sa_column=Column(String(100), nullable=False))
    trainer: str = Field(sa_column=Column(String(30), nullable=False))
    state: str = Field(sa_column=Column(String(20), nullable=False))
    spec_json: str = Field(sa_column=Column(Text, nullable=False))
    output_kind: str = Field(sa_column=Column(String(30), nullable=False))
    output_name: str = Field(sa_column=Column(String(200), nullable=False))
    queued_by: str = Field(sa_column=Column(String(100), nullable=False))
    queued_at: datetime = Field(sa_column=_tz())
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    runner: str | None = Field(default=None, sa_column=Column(String(100)))
    contract_id: str | None = Field(default=None, sa_column=Column(String(100)))
    contract_digest: str | None = Field(default=None, sa_column=Column(String(71)))
    claim_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    claimed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    closed_seq: int | None = Field(default=None, sa_column=Column(BigInteger))
    closed_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    result_json: str | None = Field(default=None, sa_column=Column(Text))
    updated_seq: int = Field(sa_column=Column(BigInteger, nullable=False))


class JobLeaseRow(SQLModel, table=True):
    """The live lease of a claimed job: operational state, NOT a ledger projection.

    Written with the ``job.claimed`` entry and renewed by heartbeats without touching the
    ledger (a heartbeat every few seconds per runner would flood it); deleted when the job is
    released, finished, failed, cancelled or requeued after expiry, each of which is ledgered.
    The integrity check does not compare it with a replay.
    """

    __tablename__ = "job_leases"

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("jobs.id"), primary_key=True, autoincrement=False)
    )
    runner: str = Field(sa_column=Column(String(100), nullable=False))
    claim_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    lease_seconds: int = Field(sa_column=Column(Integer, nullable=False))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    heartbeat_at: datetime = Field(sa_column=_tz())
    progress_json: str = Field(sa_column=Column(Text, nullable=False))


class ContentBlobRow(SQLModel, table=True):
    """Bytes of registered content, by project and digest: operational, NOT a projection.

    Dataset and rubric content sent at registration, and files uploaded for models and job
    outputs, so that a runner on another machine can fetch what it trains on and check it
    against the ledgered digest. A directory is stored as its manifest (``kind`` manifest,
    whose digest is the directory's digest) plus one blob per file. Rows can be erased (for
    example a dataset with personal data) without touching the ledger.
    """

    __tablename__ = "content_blobs"

    project: str = Field(sa_column=Column(String(100), primary_key=True))
    digest: str = Field(sa_column=Column(String(71), primary_key=True))
    kind: str = Field(sa_column=Column(String(10), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_by: str = Field(sa_column=Column(String(100), nullable=False))
    created_at: datetime = Field(sa_column=_tz())


class OutboxCursorRow(SQLModel, table=True):
    """How far a background sweep has read the ledger: operational, NOT a projection.

    One row per consumer (``webhook:<receiver>``, ``alerts``). A sweep reads the entries after
    ``last_seq``, does its work and advances the cursor in the same transaction, so a crash
    between a ledger commit and the sweep loses nothing (see ``controlplane/webhooks``).
    """

    __tablename__ = "outbox_cursors"  # in store/integrity.py NOT_PROJECTIONS

    consumer: str = Field(sa_column=Column(String(300), primary_key=True))
    last_seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(sa_column=_tz())


class WebhookDeliveryRow(SQLModel, table=True):
    """One ledger entry to POST to one receiver: operational delivery state, NOT a projection.

    ``state`` is pending (``next_attempt_at`` says when; ``lease_until`` is set while a
    deliverer holds it), delivered, or failed (gave up after the configured maximum age).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("receiver", "seq"),
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    )  # in store/integrity.py NOT_PROJECTIONS

    id: int | None = Field(default=None, sa_column=Column(Integer, primary_key=True))
    receiver: str = Field(sa_column=Column(String(300), nullable=False))
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    action: str = Field(sa_column=Column(String(100), nullable=False))
    state: str = Field(sa_column=Column(String(20), nullable=False))
    attempts: int = Field(sa_column=Column(Integer, nullable=False))
    created_at: datetime = Field(sa_column=_tz())
    next_attempt_at: datetime = Field(sa_column=_tz())
    lease_until: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    delivered_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    last_error: str | None = Field(default=None, sa_column=Column(Text))
