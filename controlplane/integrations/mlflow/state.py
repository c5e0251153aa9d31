"""What MLflow should hold, derived from our projections alone (never from MLflow).

Naming (documented in the README):

- one registered model per artifact, named ``<project>.<kind>.<name>`` (for example
  ``default.policy.helpful-dpo``); a name longer than MLflow's 256 characters keeps its first
  243 characters, ``~`` and 12 hex digits of the SHA-256 of the full name;
- one model version per artifact version, source = the version's URI, tagged
  ``controlplane.{project,kind,name,version,digest,seq}`` (``seq``: the ledger entry that
  registered it). MLflow numbers versions itself, so MLflow's version 3 need not be our
  version 3 (a version created directly in MLflow takes a number); the tags say which is which;
- the aliases ``staging``, ``canary`` and ``production`` point at the MLflow version of the
  version holding that (exclusive) stage; no holder, no alias. Other aliases are left alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from controlplane.registry.refs import MODEL_KINDS
from controlplane.store.models import ArtifactVersionRow

MANAGED_ALIASES = ("staging", "canary", "production")
"""The exclusive pre-production and production stages mirrored as MLflow aliases."""

PREFIX = "controlplane."
MANAGED = PREFIX + "managed"
PROJECT = PREFIX + "project"
KIND = PREFIX + "kind"
NAME = PREFIX + "name"
VERSION = PREFIX + "version"
DIGEST = PREFIX + "digest"
SEQ = PREFIX + "seq"
FOREIGN = PREFIX + "foreign"
DUPLICATE_OF = PREFIX + "duplicate_of"
SYNCED_SEQ = PREFIX + "synced_seq"
SYNCED_ALIASES = PREFIX + "synced_aliases"
SYNCED_MAX_VERSION = PREFIX + "synced_max_version"
BOOKKEEPING = (SYNCED_SEQ, SYNCED_ALIASES, SYNCED_MAX_VERSION)
"""Registered-model tags the mirror writes at the end of a complete sync: what it left there.
They tell pending work (our ledger moved past ``synced_seq``) from drift (MLflow changed after
we wrote it), and let the periodic catch-up skip models that nobody touched."""

MAX_NAME = 256


@dataclass(frozen=True, order=True)
class ArtifactKey:
    project: str
    kind: str
    name: str

    @property
    def model_name(self) -> str:
        return model_name(self)

    def __str__(self) -> str:
        return f"{self.project}:{self.kind}/{self.name}"


def model_name(key: ArtifactKey) -> str:
    full = f"{key.project}.{key.kind}.{key.name}"
    if len(full) <= MAX_NAME:
        return full
    return f"{full[:243]}~{hashlib.sha256(full.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class DesiredVersion:
    version: int
    digest: str
    uri: str
    seq: int
    stage: str
    stage_seq: int | None

    @property
    def changed_seq(self) -> int:
        """The ledger seq from which this version's current stage holds."""
        return self.stage_seq if self.stage_seq is not None else self.seq


@dataclass
class DesiredArtifact:
    key: ArtifactKey
    versions: list[DesiredVersion] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.key.model_name

    @property
    def last_seq(self) -> int:
        """The last ledger entry that changed what MLflow should hold for this artifact."""
        return max(max(v.seq, v.changed_seq) for v in self.versions)

    def model_tags(self) -> dict[str, str]:
        return {
            MANAGED: "true",
            PROJECT: self.key.project,
            KIND: self.key.kind,
            NAME: self.key.name,
        }

    def version_tags(self, v: DesiredVersion) -> dict[str, str]:
        return {
            PROJECT: self.key.project,
            KIND: self.key.kind,
            NAME: self.key.name,
            VERSION: str(v.version),
            DIGEST: v.digest,
            SEQ: str(v.seq),
        }

    def holders(self) -> dict[str, DesiredVersion]:
        """Managed alias -> the version holding that stage (the latest to enter it)."""
        out: dict[str, DesiredVersion] = {}
        for v in self.versions:
            if v.stage in MANAGED_ALIASES:
                held = out.get(v.stage)
                if held is None or v.changed_seq > held.changed_seq:
                    out[v.stage] = v
        return out


def _row_version(row: ArtifactVersionRow) -> DesiredVersion:
    return DesiredVersion(
        version=row.version,
        digest=row.digest,
        uri=row.uri,
        seq=row.ledger_seq,
        stage=row.stage,
        stage_seq=row.stage_seq,
    )


def load_desired(
    session: Session, keys: Iterable[ArtifactKey] | None = None
) -> list[DesiredArtifact]:
    """The desired state of ``keys`` (default: every reward model and policy)."""
    query = select(ArtifactVersionRow).where(ArtifactVersionRow.kind.in_(MODEL_KINDS))
    wanted = None if keys is None else sorted(set(keys))
    rows: list[ArtifactVersionRow] = []
    if wanted is None:
        rows = list(session.execute(query).scalars())
    else:
        for start in range(0, len(wanted), 200):
            chunk = wanted[start : start + 200]
            rows.extend(
                session.execute(
                    query.where(
                        or_(
                            *(
                                and_(
                                    ArtifactVersionRow.project == k.project,
                                    ArtifactVersionRow.kind == k.kind,
                                    ArtifactVersionRow.name == k.name,
                                )
                                for k in chunk
                            )
                        )
                    )
                ).scalars()
            )
    by_key: dict[ArtifactKey, DesiredArtifact] = {}
    for row in sorted(rows, key=lambda r: (r.project, r.kind, r.name, r.version)):
        key = ArtifactKey(row.project, row.kind, row.name)
        by_key.setdefault(key, DesiredArtifact(key)).versions.append(_row_version(row))
    return [by_key[k] for k in sorted(by_key)]


def last_seqs(session: Session) -> dict[ArtifactKey, tuple[int, int]]:
    """Per model artifact: (last seq that changed its desired state, number of versions).

    One grouped query: the periodic catch-up compares it with the models' bookkeeping tags.
    """
    stage_or_registration = func.coalesce(
        ArtifactVersionRow.stage_seq, ArtifactVersionRow.ledger_seq
    )
    rows = session.execute(
        select(
            ArtifactVersionRow.project,
            ArtifactVersionRow.kind,
            ArtifactVersionRow.name,
            func.max(ArtifactVersionRow.ledger_seq),
            func.max(stage_or_registration),
            func.count(),
        )
        .where(ArtifactVersionRow.kind.in_(MODEL_KINDS))
        .group_by(ArtifactVersionRow.project, ArtifactVersionRow.kind, ArtifactVersionRow.name)
    ).all()
    return {
        ArtifactKey(p, k, n): (max(int(reg), int(stage)), int(count))
        for p, k, n, reg, stage, count in rows
    }
