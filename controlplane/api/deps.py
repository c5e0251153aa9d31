"""Dependencies as ``Annotated`` aliases: the control plane, a read session, the caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from controlplane.authz.service import Principal
from controlplane.core import ControlPlane

_bearer = HTTPBearer(auto_error=False, description="API token (`controlplane principal token`)")


def get_cp(request: Request) -> ControlPlane:
    return request.app.state.cp  # type: ignore[no-any-return]


CP = Annotated[ControlPlane, Depends(get_cp)]


def get_session(cp: CP) -> Iterator[Session]:
    with cp.db.read() as session:
        yield session


ReadSession = Annotated[Session, Depends(get_session)]


def get_principal(
    request: Request,
    cp: CP,
    session: ReadSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = credentials.credentials if credentials is not None else None
    principal = cp.identity.authenticate(session, token)
    request.state.principal_id = principal.id  # for the access log line
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
