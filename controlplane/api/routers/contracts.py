"""Data contracts (register, read, revoke) and annotator identities (erase, resolve)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from controlplane import names
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.problems import json_object
from controlplane.api.schemas import AnnotatorErase, AnnotatorResolve, ContractRegister, Reason
from controlplane.contracts.statement import PURPOSES
from controlplane.registry.digests import DIGEST_PATTERN

router = APIRouter(prefix="/v1", tags=["contracts"])


@router.post(
    "/projects/{project}/contracts",
    status_code=status.HTTP_201_CREATED,
    responses={200: json_object("The very same envelope was registered before")},
)
def register_contract(
    project: str,
    body: ContractRegister,
    response: Response,
    cp: CP,
    session: ReadSession,
    caller: Caller,
) -> dict[str, Any]:
    """Register a contract signed on the owner's machine. The server checks the signature
    (an active key of the caller, who must be the owner it names) and that every subject is
    an approved version with that digest; a refusal is recorded (``contract.refused``)."""
    cp.identity.authorize(session, caller, project, "contracts", "register", record_denial=True)
    contract, created = cp.contracts.register(caller, project, body.envelope)
    if not created:
        response.status_code = status.HTTP_200_OK
    return contract


@router.get("/projects/{project}/contracts")
def list_contracts(
    project: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    state: Annotated[str | None, Query(pattern="^(active|revoked|expired)$")] = None,
    purpose: Annotated[str | None, Query(pattern="^(" + "|".join(PURPOSES) + ")$")] = None,
    covers: Annotated[
        str | None, Query(pattern=DIGEST_PATTERN.pattern, description="a subject digest")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Contracts of a project, newest first."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "contracts", "read")
    data = cp.contracts.contracts(session, project, state, purpose, covers, limit)
    return {"data": data, "count": len(data)}


@router.get("/contracts/{contract_id}")
def get_contract(contract_id: str, cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """A contract with its statement and the envelope exactly as registered."""
    row = cp.contracts.row(session, contract_id)
    cp.identity.authorize(session, caller, row.project, "contracts", "read")
    return cp.contracts.get(session, contract_id)


@router.post("/contracts/{contract_id}/revoke")
def revoke_contract(
    contract_id: str, body: Reason, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Revoke a contract: no job may use it from now on (a data owner of its project, or
    an admin)."""
    row = cp.contracts.row(session, contract_id)
    cp.identity.authorize(session, caller, row.project, "contracts", "revoke", record_denial=True)
    return cp.contracts.revoke(caller, contract_id, body.reason)


@router.post("/contracts/{contract_id}/annotators/resolve")
def resolve_annotator(
    contract_id: str, body: AnnotatorResolve, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Who is behind a pseudonym, if the contract allows the caller to ask (ledgered without
    naming the person). Unmasking someone is audit-relevant: a caller who may not even read
    the contract is recorded (``access.denied``) like a refused change."""
    row = cp.contracts.row(session, contract_id)
    cp.identity.authorize(session, caller, row.project, "contracts", "read", record_denial=True)
    return cp.contracts.resolve_annotator(caller, contract_id, body.pseudonym)


@router.post("/projects/{project}/annotators/erasures")
def erase_annotator(
    project: str, body: AnnotatorErase, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Right to erasure: delete a person's pseudonym mapping in a project. The ledger entry
    (``annotator.erased``) names no one."""
    cp.identity.authorize(session, caller, project, "annotators", "erase", record_denial=True)
    return cp.erasure.erase(caller, project, annotator=body.annotator, pseudonym=body.pseudonym)
