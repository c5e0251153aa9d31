"""Liveness and readiness: answers without a token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controlplane import __version__
from controlplane.api.deps import CP, ReadSession

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(cp: CP, session: ReadSession) -> dict[str, Any]:
    """The server is up and its database answers."""
    return {
        "status": "ok",
        "version": __version__,
        "origin": cp.signer.origin,
        "ledger_size": cp.store.size(session),
        "database": cp.db.dialect,
    }
