"""The registry service: validates, decides, and appends ``artifact.version_registered``.

Version numbers are assigned under the ledger lock, so concurrent registrations of one
artifact get 1, 2, 3, ... with no gaps and no duplicates on either database.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import UTC
from typing import Any

from sqlalchemy import func, literal, select, text
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.errors import InvalidInput, NotFound
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import nesting_depth
from controlplane.ledger.errors import MalformedError
from controlplane.registry import datasets
from controlplane.registry import projections as _projections
from controlplane.registry.digests import DIGEST_PATTERN, digest_bytes
from controlplane.registry.refs import VersionRef, check_relation
from controlplane.registry.refs import kind as check_kind
from controlplane.store.ledger_store import LedgerStore, Transaction
from controlplane.store.models import (
    AnnotatorPseudonymRow,
    ArtifactRow,
    ArtifactVersionRow,
    LineageEdgeRow,
)

MAX_METADATA_BYTES = 256 * 1024
MAX_LINEAGE_EDGES = 1000
MAX_METADATA_DEPTH = 32
_INDEX_WALK_SETTINGS = ("jit", "enable_hashjoin", "enable_mergejoin")
"""PostgreSQL planner settings turned off for a lineage walk (see ``RegistryService._walk``)."""


def _version_dict(
    row: Any,
    lineage: list[dict[str, Any]] | None = None,
    *,
    metadata: bool = True,
) -> dict:
    """The API's view of a version (an ORM row or a column row with the same names);
    ``metadata=False`` for listings that leave it out (the
    column is then not loaded at all: metadata may be up to 256 KiB per version)."""
    created = row.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    out = {
        "project": row.project,
        "kind": row.kind,
        "name": row.name,
        "version": row.version,
        "ref": f"{row.kind}/{row.name}@{row.version}",
        "digest": row.digest,
        "uri": row.uri,
        "created_by": row.created_by,
        "created_at": created,
        "ledger_seq": row.ledger_seq,
        "stage": row.stage,
    }
    if metadata:
        out["metadata"] = json.loads(row.metadata_json)
    if lineage is not None:
        out["lineage"] = lineage
    return out


class RegistryService:
    def __init__(self, store: LedgerStore, pseudonym_key: bytes) -> None:
        self.store = store
        self._pseudonym_key = pseudonym_key

    # -- registration ----------------------------------------------------------------------------

    def register_version(
        self,
        actor: str,
        project: str,
        kind: str,
        name: str,
        *,
        digest: str,
        uri: str,
        metadata: Mapping[str, Any] | None = None,
        lineage: Sequence[Mapping[str, Any]] = (),
        pseudonyms: Mapping[str, str] | None = None,
        tx: Transaction | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Register a new immutable version. Returns ``(version, created)``.

        Registering the same digest, URI, metadata and lineage as the latest version again
        returns that version with ``created=False`` (CI retries are safe). With ``tx`` the
        version is registered inside the caller's transaction (a job's outputs commit together
        with ``job.finished``); otherwise in a transaction of its own.
        """
        names.project(project)
        check_kind(kind)
        names.artifact_name(name)
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            raise InvalidInput(f"digest must be sha256:<64 lowercase hex>, got {digest!r}")
        names.uri(uri)
        meta = dict(metadata or {})
        if nesting_depth(meta) > MAX_METADATA_DEPTH:
            raise InvalidInput(f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels")
        try:
            encoded = canonical_json(meta)
        except MalformedError as exc:
            raise InvalidInput(f"metadata: {exc}") from None
        if len(encoded) > MAX_METADATA_BYTES:
            raise InvalidInput(f"metadata exceeds {MAX_METADATA_BYTES} bytes")
        edges = self._parse_lineage(lineage)

        with self.store.transaction() if tx is None else nullcontext(tx) as tx:
            tx.lock()
            session = tx.session
            for _relation, parent in edges:
                if _projections.find_version(session, project, *_ref_key(parent)) is None:
                    raise NotFound(f"lineage parent {parent} does not exist in project {project!r}")
            artifact = _projections.find_artifact(session, project, kind, name)
            payload = {
                "digest": digest,
                "uri": uri,
                "metadata": meta,
                "lineage": [
                    {"relation": r, "kind": p.kind, "name": p.name, "version": p.version}
                    for r, p in edges
                ],
            }
            if artifact is not None:
                latest = _projections.find_version(
                    session, project, kind, name, artifact.latest_version
                )
                if latest is not None and self._same(session, latest, payload):
                    return self._with_lineage(session, latest), False
            version = 1 if artifact is None else artifact.latest_version + 1
            tx.append(
                actor=actor,
                action="artifact.version_registered",
                subject={"project": project, "kind": kind, "name": name, "version": version},
                payload=payload,
            )
            self._remember_pseudonyms(tx, project, pseudonyms or {})
            row = _projections.find_version(session, project, kind, name, version)
            assert row is not None
            return self._with_lineage(session, row), True

    def register_dataset(
        self,
        actor: str,
        project: str,
        name: str,
        content: bytes,
        *,
        uri: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        lineage: Sequence[Mapping[str, Any]] = (),
        digest: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Validate a JSONL preference dataset, pseudonymise annotators and register it."""
        names.project(project)
        summary = datasets.summarize(content, key=self._pseudonym_key, project=project)
        if digest is not None and digest != summary.digest:
            raise InvalidInput(f"digest {digest} does not match the content ({summary.digest})")
        edges = list(lineage)
        declared = {
            (e.get("relation"), e.get("kind"), e.get("name"), e.get("version")) for e in edges
        }
        with self.store.db.read() as session:
            for text in summary.rubric_refs:
                ref = _rubric_ref(text)
                if ref is None:
                    continue
                key = ("follows_rubric", ref.kind, ref.name, ref.version)
                if key not in declared and _projections.find_version(
                    session, project, *_ref_key(ref)
                ):
                    edges.append(
                        dict(zip(("relation", "kind", "name", "version"), key, strict=True))
                    )
                    declared.add(key)
        meta = {**dict(metadata or {}), "format": "preference-jsonl", "stats": summary.stats}
        return self.register_version(
            actor,
            project,
            "dataset",
            name,
            digest=summary.digest,
            uri=uri or f"urn:controlplane:dataset:{summary.digest}",
            metadata=meta,
            lineage=edges,
            pseudonyms=summary.pseudonyms,
        )

    def register_rubric(
        self,
        actor: str,
        project: str,
        name: str,
        content: bytes,
        *,
        filename: str | None = None,
        uri: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        lineage: Sequence[Mapping[str, Any]] = (),
        digest: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Register a labelling guideline document (Markdown or text)."""
        info = datasets.summarize_rubric(content, filename)
        computed = digest_bytes(content)
        if digest is not None and digest != computed:
            raise InvalidInput(f"digest {digest} does not match the content ({computed})")
        return self.register_version(
            actor,
            project,
            "rubric",
            name,
            digest=computed,
            uri=uri or f"urn:controlplane:rubric:{computed}",
            metadata={**dict(metadata or {}), "document": info},
            lineage=lineage,
        )

    @staticmethod
    def _parse_lineage(lineage: Sequence[Mapping[str, Any]]) -> list[tuple[str, VersionRef]]:
        if len(lineage) > MAX_LINEAGE_EDGES:
            raise InvalidInput(f"at most {MAX_LINEAGE_EDGES} lineage edges")
        edges: list[tuple[str, VersionRef]] = []
        for position, edge in enumerate(lineage):
            if not isinstance(edge, Mapping):
                raise InvalidInput(f"lineage[{position}] must be an object")
            relation = edge.get("relation")
            if "ref" in edge and edge.get("kind") is None:
                parent = VersionRef.parse(str(edge["ref"]))
            else:
                parent = VersionRef.build(
                    str(edge.get("kind")),
                    str(edge.get("name")),
                    edge.get("version"),  # type: ignore[arg-type]
                )
            check_relation(str(relation), parent)
            if (relation, parent) not in edges:
                edges.append((str(relation), parent))
        return sorted(edges, key=lambda e: (e[0], str(e[1])))

    def _same(self, session: Session, row: ArtifactVersionRow, payload: dict[str, Any]) -> bool:
        if row.digest != payload["digest"] or row.uri != payload["uri"]:
            return False
        if row.metadata_json != canonical_json(payload["metadata"]).decode():
            return False
        current = sorted(
            (e["relation"], e["kind"], e["name"], e["version"])
            for e in self._edges(session, row.id, parents=True)
        )
        wanted = sorted(
            (e["relation"], e["kind"], e["name"], e["version"]) for e in payload["lineage"]
        )
        return current == wanted

    def _remember_pseudonyms(
        self, tx: Transaction, project: str, mapping: Mapping[str, str]
    ) -> None:
        """Keep pseudonym -> person outside the ledger (erasable on request)."""
        if not mapping:
            return
        existing = set(
            tx.session.execute(
                select(AnnotatorPseudonymRow.pseudonym).where(
                    AnnotatorPseudonymRow.pseudonym.in_(list(mapping))
                )
            ).scalars()
        )
        now = clock.now()
        for alias, person in mapping.items():
            if alias not in existing:
                tx.session.add(
                    AnnotatorPseudonymRow(
                        pseudonym=alias, project=project, annotator=person, created_at=now
                    )
                )

    # -- queries ---------------------------------------------------------------------------------

    def _edges(self, session: Session, version_id: int, *, parents: bool) -> list[dict[str, Any]]:
        other = LineageEdgeRow.parent_id if parents else LineageEdgeRow.child_id
        mine = LineageEdgeRow.child_id if parents else LineageEdgeRow.parent_id
        rows = session.execute(
            select(LineageEdgeRow.relation, ArtifactVersionRow)
            .join(ArtifactVersionRow, ArtifactVersionRow.id == other)
            .where(mine == version_id)
        ).all()
        return sorted(
            (
                {
                    "relation": relation,
                    "kind": v.kind,
                    "name": v.name,
                    "version": v.version,
                    "ref": f"{v.kind}/{v.name}@{v.version}",
                    "digest": v.digest,
                }
                for relation, v in rows
            ),
            key=lambda e: (e["relation"], e["ref"]),
        )

    def _with_lineage(self, session: Session, row: ArtifactVersionRow) -> dict[str, Any]:
        return _version_dict(row, self._edges(session, row.id, parents=True))

    def _version_row(self, session: Session, project: str, ref: VersionRef) -> ArtifactVersionRow:
        row = _projections.find_version(session, project, *_ref_key(ref))
        if row is None:
            raise NotFound(f"{ref} does not exist in project {project!r}")
        return row

    def get_version(self, session: Session, project: str, ref: VersionRef) -> dict[str, Any]:
        row = self._version_row(session, project, ref)
        out = self._with_lineage(session, row)
        out["used_by"] = self._edges(session, row.id, parents=False)
        return out

    def latest_version(self, session: Session, project: str, kind: str, name: str) -> dict:
        artifact = _projections.find_artifact(session, project, check_kind(kind), name)
        if artifact is None:
            raise NotFound(f"{kind}/{name} does not exist in project {project!r}")
        return self.get_version(session, project, VersionRef(kind, name, artifact.latest_version))

    def list_artifacts(
        self,
        session: Session,
        project: str,
        kind: str | None = None,
        search: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int]:
        query = select(ArtifactRow).where(ArtifactRow.project == project)
        if kind:
            query = query.where(ArtifactRow.kind == check_kind(kind))
        if search:
            query = query.where(ArtifactRow.name.icontains(search, autoescape=True))
        count = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = session.execute(
            query.order_by(ArtifactRow.kind, ArtifactRow.name).offset(offset).limit(limit)
        ).scalars()
        return [
            {
                "project": r.project,
                "kind": r.kind,
                "name": r.name,
                "latest_version": r.latest_version,
                "created_by": r.created_by,
                "created_at": r.created_at,
            }
            for r in rows
        ], count

    def list_versions(
        self, session: Session, project: str, kind: str, name: str
    ) -> list[dict[str, Any]]:
        artifact = _projections.find_artifact(session, project, check_kind(kind), name)
        if artifact is None:
            raise NotFound(f"{kind}/{name} does not exist in project {project!r}")
        rows = session.execute(
            select(ArtifactVersionRow)
            .where(ArtifactVersionRow.artifact_id == artifact.id)
            .order_by(ArtifactVersionRow.version)
        ).scalars()
        return [_version_dict(r) for r in rows]

    def lineage(
        self, session: Session, project: str, ref: VersionRef, direction: str = "both"
    ) -> dict[str, Any]:
        """Ancestors and/or descendants to any depth (recursive CTE on both databases).

        Returns the nodes with their distance from ``ref`` and every edge among them.
        """
        if direction not in ("ancestors", "descendants", "both"):
            raise InvalidInput("direction must be ancestors, descendants or both")
        root = self._version_row(session, project, ref)
        found: dict[int, int] = {root.id: 0}
        if direction in ("ancestors", "both"):
            found.update(self._walk(session, root.id, up=True))
        if direction in ("descendants", "both"):
            found.update({k: -v for k, v in self._walk(session, root.id, up=False).items()})
        ids = list(found)
        # Plain column rows, not ORM objects: a walk may return thousands of nodes, and
        # identity-map bookkeeping was most of the cost of a deep lineage query.
        table = ArtifactVersionRow.__table__
        columns = [c for c in table.c if c.name != "metadata_json"]
        edge = LineageEdgeRow.__table__.c
        versions: dict[int, Any] = {}
        edges: list[dict[str, Any]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            versions.update(
                (v.id, v) for v in session.execute(select(*columns).where(table.c.id.in_(chunk)))
            )
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for e in session.execute(
                select(edge.child_id, edge.parent_id, edge.relation).where(edge.child_id.in_(chunk))
            ):
                if e.parent_id in found:
                    edges.append(
                        {
                            "child": _ref_text(versions[e.child_id]),
                            "parent": _ref_text(versions[e.parent_id]),
                            "relation": e.relation,
                        }
                    )
        nodes = [
            {**_version_dict(versions[i], metadata=False), "distance": distance}
            for i, distance in found.items()
        ]
        nodes.sort(key=lambda n: (n["distance"], n["ref"]))
        edges.sort(key=lambda e: (e["child"], e["parent"], e["relation"]))
        return {"root": str(ref), "direction": direction, "nodes": nodes, "edges": edges}

    @staticmethod
    def _walk(session: Session, start_id: int, *, up: bool) -> dict[int, int]:
        """``{version id: depth}`` reachable from ``start_id`` along edges (minimum depth).

        On PostgreSQL the recursive step is planned from the worktable's guessed size, and on
        a table without statistics (freshly loaded, autovacuum not yet round) the guess is
        millions of rows: the planner then sorts or hashes the whole edge table once per level
        and JIT-compiles the query, about 100x slower than the index walk it does with
        statistics. A walk touches a handful of edges per level, so it is always an index
        nested loop: the planner is told so for this statement only, in a savepoint whose
        rollback restores the session's settings.
        """
        src = LineageEdgeRow.child_id if up else LineageEdgeRow.parent_id
        dst = LineageEdgeRow.parent_id if up else LineageEdgeRow.child_id
        seed = select(dst.label("id"), literal(1).label("depth")).where(src == start_id)
        walk = seed.cte("walk", recursive=True)
        step = select(dst.label("id"), (walk.c.depth + 1).label("depth")).join(
            walk, src == walk.c.id
        )
        walk = walk.union(step)
        query = select(walk.c.id, func.min(walk.c.depth)).group_by(walk.c.id)
        if session.get_bind().dialect.name != "postgresql":
            rows = session.execute(query).all()
        else:
            savepoint = session.begin_nested()
            try:
                session.execute(  # SET LOCAL of each, in one statement
                    text(
                        "SELECT "
                        + ", ".join(
                            f"set_config('{name}', 'off', true)" for name in _INDEX_WALK_SETTINGS
                        )
                    )
                )
                rows = session.execute(query).all()
            finally:
                savepoint.rollback()
        return {int(i): int(d) for i, d in rows if i != start_id}


def _ref_key(ref: VersionRef) -> tuple[str, str, int]:
    return ref.kind, ref.name, ref.version


def _ref_text(row: Any) -> str:
    return f"{row.kind}/{row.name}@{row.version}"


def _rubric_ref(text: str) -> VersionRef | None:
    """A dataset line's ``rubric`` value as a rubric reference, if it is one."""
    candidate = text if text.startswith("rubric/") else f"rubric/{text}"
    try:
        return VersionRef.parse(candidate)
    except InvalidInput:
        return None


__all__ = ["RegistryService"]
