"""Principals, their tokens and role grants. Managing them is for global admins."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.schemas import PrincipalCreate, RoleGrant, TokenCreate, TokenIssued

router = APIRouter(prefix="/v1", tags=["principals"])


@router.get("/whoami")
def whoami(cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """The caller and their roles."""
    return cp.identity.get_principal(session, caller.id)


@router.get("/principals")
def list_principals(cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    cp.identity.authorize(session, caller, "*", "principals", "read")
    data = cp.identity.list_principals(session)
    return {"data": data, "count": len(data)}


@router.post("/principals", status_code=status.HTTP_201_CREATED)
def create_principal(
    body: PrincipalCreate, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    cp.identity.authorize(session, caller, "*", "principals", "manage", record_denial=True)
    cp.identity.create_principal(caller.id, body.id, body.kind, body.display_name)
    with cp.db.read() as fresh:
        return cp.identity.get_principal(fresh, body.id)


@router.get("/principals/{principal_id}")
def get_principal(
    principal_id: str, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    if principal_id != caller.id:
        cp.identity.authorize(session, caller, "*", "principals", "read")
    return cp.identity.get_principal(session, principal_id)


@router.post("/principals/{principal_id}/disable")
def disable_principal(
    principal_id: str, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    cp.identity.authorize(session, caller, "*", "principals", "manage", record_denial=True)
    cp.identity.disable_principal(caller.id, principal_id)
    with cp.db.read() as fresh:
        return cp.identity.get_principal(fresh, principal_id)


@router.post(
    "/principals/{principal_id}/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenIssued,
)
def issue_token(
    principal_id: str, body: TokenCreate, cp: CP, session: ReadSession, caller: Caller
) -> TokenIssued:
    """Issue a bearer token. The secret is in this response only."""
    if principal_id != caller.id:
        cp.identity.authorize(session, caller, "*", "principals", "manage", record_denial=True)
    issued = cp.identity.issue_token(caller.id, principal_id, body.name, body.expires_in_days)
    return TokenIssued(
        id=issued.id,
        principal_id=issued.principal_id,
        token=issued.token,
        expires_at=issued.expires_at,
    )


@router.get("/principals/{principal_id}/tokens")
def list_tokens(principal_id: str, cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    if principal_id != caller.id:
        cp.identity.authorize(session, caller, "*", "principals", "read")
    data = cp.identity.list_tokens(session, principal_id)
    return {"data": data, "count": len(data)}


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, cp: CP, session: ReadSession, caller: Caller) -> Response:
    own = {t["id"] for t in cp.identity.list_tokens(session, caller.id)}
    if token_id not in own:
        cp.identity.authorize(session, caller, "*", "principals", "manage", record_denial=True)
    cp.identity.revoke_token(caller.id, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/principals/{principal_id}/roles", status_code=status.HTTP_201_CREATED)
def grant_role(
    principal_id: str, body: RoleGrant, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    cp.identity.authorize(session, caller, body.project, "roles", "manage", record_denial=True)
    cp.identity.grant_role(caller.id, principal_id, body.role, body.project)
    with cp.db.read() as fresh:
        return cp.identity.get_principal(fresh, principal_id)


@router.delete("/principals/{principal_id}/roles/{role}")
def revoke_role(
    principal_id: str,
    role: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    project: str = "*",
) -> dict[str, Any]:
    cp.identity.authorize(session, caller, project, "roles", "manage", record_denial=True)
    cp.identity.revoke_role(caller.id, principal_id, role, project)
    with cp.db.read() as fresh:
        return cp.identity.get_principal(fresh, principal_id)
