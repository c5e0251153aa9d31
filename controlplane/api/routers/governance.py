"""Sign-off keys, promotion requests and sign-offs, rollback, retirement and status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from controlplane import clock, names
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.schemas import KeyRegister, KeyRevoke, Reason, RequestCreate, Signoff
from controlplane.errors import InvalidInput
from controlplane.governance import statements
from controlplane.registry.refs import VersionRef
from controlplane.registry.refs import kind as check_kind

router = APIRouter(prefix="/v1", tags=["governance"])


@router.post("/keys", status_code=status.HTTP_201_CREATED)
def register_key(body: KeyRegister, cp: CP, caller: Caller) -> dict[str, Any]:
    """Register the caller's Ed25519 sign-off key (the private key never leaves their machine)."""
    return cp.governance.register_key(caller, body.public_key, body.name)


@router.get("/keys")
def list_keys(
    cp: CP, session: ReadSession, caller: Caller, principal: str | None = None
) -> dict[str, Any]:
    """Sign-off keys, active and revoked (public keys only)."""
    data = cp.governance.keys(session, principal)
    return {"data": data, "count": len(data)}


@router.post("/keys/{key_id}/revoke")
def revoke_key(
    key_id: str, body: KeyRevoke, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Revoke a key: later signatures by it are refused, earlier ones stay valid."""
    is_admin = cp.authorizer.allowed(session, caller.id, "*", "principals", "manage")
    return cp.governance.revoke_key(caller, key_id, body.reason, is_admin=is_admin)


@router.post("/projects/{project}/requests", status_code=status.HTTP_201_CREATED)
def open_request(
    project: str, body: RequestCreate, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Ask for a version to move to a stage; refused at once if evidence or lineage is missing."""
    cp.identity.authorize(session, caller, project, "requests", "open", record_denial=True)
    ref = VersionRef.build(check_kind(body.kind), body.name, body.version)
    return cp.governance.open_request(
        caller, project, ref, body.target_stage, body.justification, body.traffic_share
    )


@router.get("/projects/{project}/requests")
def list_requests(
    project: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    state: Annotated[
        str | None, Query(pattern="^(open|approved|rejected|withdrawn|expired)$")
    ] = None,
    kind: Annotated[str | None, Query(max_length=30)] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The queue: requests of a project, newest first."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "requests", "read")
    cp.governance.expire_due()
    with cp.db.read() as fresh:
        data = cp.governance.requests(fresh, project, state, kind, name, limit)
    return {"data": data, "count": len(data)}


def _request_for(cp: CP, session: ReadSession, caller: Caller, request_id: int, act: str) -> dict:
    request = cp.governance.request(session, request_id)
    cp.identity.authorize(
        session, caller, request["project"], "requests", act, record_denial=act != "read"
    )
    return request


@router.get("/requests/{request_id}")
def get_request(request_id: int, cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """A request with its sign-offs, what quorum still needs, and the statement to sign."""
    request = _request_for(cp, session, caller, request_id, "read")
    request["statement_template"] = statements.statement(
        request, caller.id, "approve", "", clock.now()
    )
    return request


@router.post("/requests/{request_id}/signoffs")
def sign_off(
    request_id: int, body: Signoff, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Approve or reject with a DSSE envelope signed by the caller's registered key."""
    _request_for(cp, session, caller, request_id, "signoff")
    return cp.governance.sign_off(caller, request_id, body.envelope)


@router.post("/requests/{request_id}/withdraw")
def withdraw(
    request_id: int, body: Reason, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    _request_for(cp, session, caller, request_id, "withdraw")
    return cp.governance.withdraw(caller, request_id, body.reason)


@router.post("/projects/{project}/artifacts/{kind}/{name}/rollback")
def rollback(
    project: str, kind: str, name: str, body: Reason, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Put the previous production version back (an emergency: one approver, with a reason)."""
    names.project(project)
    check_kind(kind)
    names.artifact_name(name)
    cp.identity.authorize(session, caller, project, "stages", "rollback", record_denial=True)
    return cp.governance.rollback(caller, project, kind, name, body.reason)


@router.post("/projects/{project}/artifacts/{kind}/{name}/versions/{version}/retire")
def retire(
    project: str,
    kind: str,
    name: str,
    version: int,
    body: Reason,
    cp: CP,
    session: ReadSession,
    caller: Caller,
) -> dict[str, Any]:
    names.project(project)
    cp.identity.authorize(session, caller, project, "stages", "retire", record_denial=True)
    return cp.governance.retire(caller, project, VersionRef.build(kind, name, version), body.reason)


@router.get("/projects/{project}/artifacts/{kind}/{name}/status")
def artifact_status(
    project: str,
    kind: str,
    name: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    at: Annotated[datetime | None, Query(description="RFC 3339 time; default now")] = None,
) -> dict[str, Any]:
    """Which version held each stage at a moment, who approved it under which rules, and
    which data and rubric it was trained on: from the ledger alone."""
    names.project(project)
    check_kind(kind)
    names.artifact_name(name)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    if at is not None and at.tzinfo is None:
        raise InvalidInput("at must carry a timezone, e.g. 2026-01-31T12:00:00Z")
    return cp.governance.status(session, project, kind, name, at)
