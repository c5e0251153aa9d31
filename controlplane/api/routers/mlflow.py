"""The MLflow mirror: status, reconcile (drift detection and repair) and the webhook receiver.

The webhook takes no bearer token: MLflow cannot send one. Its HMAC signature is the
authentication (see :mod:`controlplane.integrations.mlflow.webhooks`); a bad or stale one is
answered 401 and logged, and nothing is ledgered for it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from controlplane import names
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.problems import problem
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.integrations.mlflow import webhooks
from controlplane.integrations.mlflow.state import ArtifactKey, load_desired
from controlplane.registry.refs import VersionRef

log = logging.getLogger("controlplane.api")
router = APIRouter(prefix="/v1/integrations/mlflow", tags=["mlflow"])


class ReconcileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fix: bool = Field(default=False, description="Restore what the ledger says in MLflow.")
    project: str | None = Field(default=None, max_length=100, description="Only this project.")
    kind: Literal["reward_model", "policy"] | None = None
    name: str | None = Field(default=None, max_length=200, description="Only this artifact.")


@router.get("/status")
def mlflow_status(cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """Configuration, queue, last sync, and how many versions MLflow still lacks."""
    cp.identity.authorize(session, caller, "*", "mlflow", "status", any_project=True)
    return cp.mirror.status()


@router.get("/projects/{project}/artifacts/{kind}/{name}/versions/{version}")
def mlflow_version(
    project: str,
    kind: str,
    name: str,
    version: Annotated[int, Path(ge=1)],
    cp: CP,
    session: ReadSession,
    caller: Caller,
) -> dict[str, Any]:
    """Which MLflow model version mirrors this version (``mlflow_version`` null: none yet),
    read from MLflow: what the dashboard links to."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    cp.registry.get_version(session, project, VersionRef.build(kind, name, version))
    return cp.mirror.locate(ArtifactKey(project, kind, name), version)


@router.post("/reconcile")
def reconcile(body: ReconcileBody, cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    """Compare MLflow with the ledger; record any drift; with ``fix``, restore the ledger's
    state (aliases, tags, missing versions; foreign versions are tagged, never deleted)."""
    if (body.kind or body.name) and not body.project:
        raise InvalidInput("kind and name narrow a project: give the project too")
    scope = names.project(body.project) if body.project else "*"
    cp.identity.authorize(session, caller, scope, "mlflow", "reconcile", record_denial=True)
    if not cp.settings.mlflow_enabled:
        raise Conflict("the MLflow mirror is off (CONTROLPLANE_MLFLOW_ENABLED=false)")
    keys = None
    if body.project:
        keys = [
            d.key
            for d in load_desired(session)
            if d.key.project == body.project
            and body.kind in (None, d.key.kind)
            and body.name in (None, d.key.name)
        ]
        if body.name and not keys:
            raise NotFound(f"no reward model or policy {body.name!r} in project {body.project!r}")
    return cp.mirror.reconcile(caller.id, fix=body.fix, keys=keys).to_dict()


@router.post("/webhook", response_model=None)
async def webhook(request: Request) -> Response:
    """A delivery from MLflow's webhooks (model versions, tags, aliases): verified by its
    HMAC signature, then the model it names is reconciled at once, with fix."""
    cp = request.app.state.cp
    body = await request.body()
    if len(body) > webhooks.MAX_BODY_BYTES:
        return problem(413, "Payload too large", "a webhook delivery is small", "too-large")
    try:
        delivery = webhooks.verify(
            cp.settings.mlflow_webhook_secret,
            request.headers,
            body,
            cp.settings.mlflow_webhook_tolerance_seconds,
        )
    except webhooks.BadDelivery as exc:
        log.warning(
            "refused an MLflow webhook delivery from %s: %s",
            request.client.host if request.client else "?",
            exc.reason,
        )
        refused = problem(
            401,
            "Unauthenticated",
            "the webhook signature is missing, wrong or stale",
            "bad-signature",
            request,
        )
        del refused.headers["www-authenticate"]  # not a bearer-token endpoint
        return refused
    result = await run_in_threadpool(cp.mirror.on_webhook, delivery.delivery_id, delivery.event)
    return JSONResponse(result)
