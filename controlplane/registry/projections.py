"""Projection of ``artifact.version_registered`` into artifacts, versions and lineage edges."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.authz.projections import entry_time
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import Entry
from controlplane.store.models import ArtifactRow, ArtifactVersionRow, LineageEdgeRow
from controlplane.store.projector import projects


def find_version(
    session: Session, project: str, kind: str, name: str, version: int
) -> ArtifactVersionRow | None:
    return session.execute(
        select(ArtifactVersionRow).where(
            ArtifactVersionRow.project == project,
            ArtifactVersionRow.kind == kind,
            ArtifactVersionRow.name == name,
            ArtifactVersionRow.version == version,
        )
    ).scalar_one_or_none()


def find_artifact(session: Session, project: str, kind: str, name: str) -> ArtifactRow | None:
    return session.execute(
        select(ArtifactRow).where(
            ArtifactRow.project == project, ArtifactRow.kind == kind, ArtifactRow.name == name
        )
    ).scalar_one_or_none()


@projects("artifact.version_registered")
def _version_registered(session: Session, entry: Entry) -> None:
    subject, payload = entry.subject, entry.payload
    project, kind, name, version = (
        subject["project"],
        subject["kind"],
        subject["name"],
        subject["version"],
    )
    when = entry_time(entry)
    artifact = find_artifact(session, project, kind, name)
    if artifact is None:
        artifact = ArtifactRow(
            project=project,
            kind=kind,
            name=name,
            latest_version=version,
            created_at=when,
            created_by=entry.actor,
        )
        session.add(artifact)
        session.flush()
    else:
        artifact.latest_version = max(artifact.latest_version, version)
    row = ArtifactVersionRow(
        artifact_id=artifact.id,
        project=project,
        kind=kind,
        name=name,
        version=version,
        digest=payload["digest"],
        uri=payload["uri"],
        metadata_json=canonical_json(payload.get("metadata", {})).decode(),
        created_by=entry.actor,
        created_at=when,
        ledger_seq=entry.seq,
    )
    session.add(row)
    session.flush()
    for edge in payload.get("lineage", []):
        parent = find_version(session, project, edge["kind"], edge["name"], edge["version"])
        if parent is None:  # the service checked this under the lock; replay of a bad ledger
            raise LookupError(f"lineage parent {edge} of seq {entry.seq} does not exist")
        session.add(LineageEdgeRow(child_id=row.id, parent_id=parent.id, relation=edge["relation"]))
    session.flush()
