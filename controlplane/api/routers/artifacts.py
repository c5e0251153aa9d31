"""Artifacts, their immutable versions and lineage, scoped by project."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from controlplane import names
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.problems import json_object
from controlplane.api.schemas import VersionCreate
from controlplane.errors import InvalidInput
from controlplane.registry.refs import VersionRef
from controlplane.registry.refs import kind as check_kind

router = APIRouter(prefix="/v1/projects/{project}", tags=["artifacts"])


def _content(body: VersionCreate) -> bytes | None:
    if body.content is None:
        return None
    if body.content_encoding == "base64":
        try:
            return base64.b64decode(body.content, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput("content is not valid base64") from None
    return body.content.encode("utf-8", errors="surrogatepass")


@router.get("/artifacts")
def list_artifacts(
    project: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    kind: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    names.project(project)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    data, count = cp.registry.list_artifacts(session, project, kind, q, offset, limit)
    return {"data": data, "count": count}


@router.post(
    "/artifacts/{kind}/{name}/versions",
    status_code=status.HTTP_201_CREATED,
    responses={200: json_object("The identical latest version: nothing was registered")},
)
def register_version(
    project: str,
    kind: str,
    name: str,
    body: VersionCreate,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    response: Response,
) -> dict[str, Any]:
    """Register a new immutable version (201), or return the identical latest one (200).

    Datasets and rubrics must send their ``content``: the server validates it, computes the
    digest and statistics, and pseudonymises annotators before anything is recorded.
    """
    names.project(project)
    check_kind(kind)
    names.artifact_name(name)
    cp.identity.authorize(session, caller, project, "artifacts", "register", record_denial=True)
    lineage = [edge.model_dump(exclude_none=True) for edge in body.lineage]
    content = _content(body)
    registry = cp.registry
    if kind in ("dataset", "rubric"):
        if content is None:
            raise InvalidInput(f"a {kind} is registered with its content")
        register = registry.register_dataset if kind == "dataset" else registry.register_rubric
        extra = {"filename": body.filename} if kind == "rubric" else {}
        version, created = register(
            caller.id,
            project,
            name,
            content,
            uri=body.uri,
            metadata=body.metadata,
            lineage=lineage,
            digest=body.digest,
            **extra,
        )
        # keep the bytes, so a runner on another machine can fetch and check what it trains on
        cp.content.put(caller.id, project, content, digest=version["digest"])
    else:
        if body.digest is None or body.uri is None:
            raise InvalidInput(f"a {kind} needs a digest and a uri")
        version, created = registry.register_version(
            caller.id,
            project,
            kind,
            name,
            digest=body.digest,
            uri=body.uri,
            metadata=body.metadata,
            lineage=lineage,
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return {**version, "created": created}


@router.get("/artifacts/{kind}/{name}")
def get_artifact(
    project: str, kind: str, name: str, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    names.project(project)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    versions = cp.registry.list_versions(session, project, kind, name)
    return {"project": project, "kind": kind, "name": name, "versions": versions}


def _ref(kind: str, name: str, version: str, cp: CP, session: ReadSession, project: str) -> Any:
    if version == "latest":
        return VersionRef.parse(cp.registry.latest_version(session, project, kind, name)["ref"])
    if not re.fullmatch(r"[1-9][0-9]{0,8}", version):
        raise InvalidInput("version must be a positive integer or 'latest'")
    return VersionRef.build(kind, name, int(version))


@router.get("/artifacts/{kind}/{name}/versions/{version}")
def get_version(
    project: str,
    kind: str,
    name: str,
    version: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
) -> dict[str, Any]:
    names.project(project)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    ref = _ref(kind, name, version, cp, session, project)
    return cp.registry.get_version(session, project, ref)


@router.get("/artifacts/{kind}/{name}/versions/{version}/lineage", tags=["lineage"])
def get_lineage(
    project: str,
    kind: str,
    name: str,
    version: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    direction: Annotated[str, Query(pattern="^(ancestors|descendants|both)$")] = "both",
) -> dict[str, Any]:
    """Ancestors and descendants to any depth, with every edge among them."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "lineage", "read")
    ref = _ref(kind, name, version, cp, session, project)
    return cp.registry.lineage(session, project, ref, direction)
