"""Stored content: the bytes behind registered digests, so runners anywhere can fetch them.

The registry records digests and URIs, not bytes; a runner on another machine cannot read a
``file://`` URI of the engineer's laptop. The API therefore keeps content by ``(project,
digest)`` in ``content_blobs`` (operational state, not a ledger projection):

- dataset and rubric content, stored when it is registered through the API;
- files uploaded with ``PUT /v1/projects/{project}/content/{digest}`` (``controlplane job
  upload``, and runners for their outputs). A directory (a model) is uploaded as one blob per
  file plus its manifest (``kind=manifest``): the manifest's SHA-256 *is* the directory's
  digest (see :mod:`controlplane.registry.digests`), so a runner downloads the manifest,
  checks it against the ledgered digest, then fetches and checks every file by its line.

The server refuses bytes whose SHA-256 is not the digest they are stored under, and the
runner checks again what it receives, so neither a damaged row nor a man in the middle can
make a runner train on bytes that are not the registered ones. Rows may be erased (personal
data in a dataset) without touching the ledger.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.errors import InvalidInput, NotFound
from controlplane.registry.digests import DIGEST_PATTERN, digest_bytes
from controlplane.store.database import Database
from controlplane.store.models import ContentBlobRow

BLOB_KINDS = ("file", "manifest")
_LINE = re.compile(r"(?P<hex>[0-9a-f]{64})  (?P<path>[^\n]+)")


@dataclass(frozen=True)
class ManifestEntry:
    digest: str
    path: str


def parse_manifest(data: bytes) -> list[ManifestEntry]:
    """Lines ``<sha256 hex>  <relative posix path>``, sorted by path, no unsafe paths."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("a manifest is UTF-8 text") from None
    if text and not text.endswith("\n"):
        raise InvalidInput("a manifest ends with a newline")
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE.fullmatch(line)
        if match is None:
            raise InvalidInput(f"manifest line {number} is not '<sha256 hex>  <path>'")
        path = match["path"]
        parts = path.split("/")
        if (
            path.startswith("/")
            or any(part in ("", ".", "..") for part in parts)
            or any(ord(char) < 32 or ord(char) == 127 for char in path)
            or "\\" in path
        ):
            raise InvalidInput(f"manifest line {number} has an unsafe path {path!r}")
        entries.append(ManifestEntry("sha256:" + match["hex"], path))
    paths = [e.path for e in entries]
    if paths != sorted(paths) or len(set(paths)) != len(paths):
        raise InvalidInput("manifest paths must be sorted and unique")
    return entries


class ContentStore:
    """Put and get content by project and digest."""

    def __init__(self, db: Database, max_bytes: int) -> None:
        self.db = db
        self.max_bytes = max_bytes

    def put(
        self,
        actor: str,
        project: str,
        data: bytes,
        *,
        digest: str | None = None,
        kind: str = "file",
    ) -> tuple[dict[str, object], bool]:
        """Store ``data`` (idempotent). Returns ``(info, created)``."""
        names.project(project)
        if kind not in BLOB_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(BLOB_KINDS)}")
        actual = digest_bytes(data)
        if digest is not None:
            if not DIGEST_PATTERN.fullmatch(digest):
                raise InvalidInput(f"digest must be sha256:<64 lowercase hex>, got {digest!r}")
            if digest != actual:
                raise InvalidInput(f"the content's digest is {actual}, not {digest}")
        if len(data) > self.max_bytes:
            raise InvalidInput(f"content exceeds {self.max_bytes} bytes")
        if kind == "manifest":
            parse_manifest(data)
        try:
            with self.db.write_session() as session, session.begin():
                row = session.get(ContentBlobRow, (project, actual))
                if row is not None:
                    return _info(row), False
                row = ContentBlobRow(
                    project=project,
                    digest=actual,
                    kind=kind,
                    size=len(data),
                    data=data,
                    created_by=actor,
                    created_at=clock.now(),
                )
                session.add(row)
                session.flush()
                return _info(row), True
        except IntegrityError:  # the same bytes stored concurrently: that is success
            with self.db.read() as session:
                return _info(self.get(session, project, actual)), False

    def get(self, session: Session, project: str, digest: str) -> ContentBlobRow:
        names.project(project)
        if not DIGEST_PATTERN.fullmatch(digest):
            raise InvalidInput(f"digest must be sha256:<64 lowercase hex>, got {digest!r}")
        row = session.get(ContentBlobRow, (project, digest))
        if row is None:
            raise NotFound(f"no content {digest} is stored in project {project!r}")
        return row


def _info(row: ContentBlobRow) -> dict[str, object]:
    return {"project": row.project, "digest": row.digest, "kind": row.kind, "size": row.size}


__all__ = ["BLOB_KINDS", "ContentStore", "ManifestEntry", "parse_manifest"]
