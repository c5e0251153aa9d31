"""Alerts on production evaluations: the approvers' queue (read-only; see governance/alerts)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from controlplane import names
from controlplane.api.deps import CP, Caller, ReadSession

router = APIRouter(prefix="/v1", tags=["alerts"])


@router.get("/projects/{project}/alerts")
def list_alerts(
    project: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    rollback_suggested: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Alerts raised on versions in production, newest first (readers of the request queue)."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "requests", "read")
    data = cp.alert_monitor.alerts(project, limit)
    if rollback_suggested is not None:
        data = [a for a in data if a["rollback_suggested"] is rollback_suggested]
    return {"data": data, "count": len(data)}
