"""The FastAPI application: combines the routers; builds nothing at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from controlplane import __version__
from controlplane.api import observability, problems
from controlplane.api.limits import BodyLimit, ConcurrencyLimit, RejectNul
from controlplane.api.routers import alerts as alert_routes
from controlplane.api.routers import artifacts, governance, health, ledger, principals
from controlplane.api.routers import contracts as contract_routes
from controlplane.api.routers import jobs as job_routes
from controlplane.api.routers import mlflow as mlflow_routes
from controlplane.config import Settings
from controlplane.core import ControlPlane


def create_app(settings: Settings | None = None, cp: ControlPlane | None = None) -> FastAPI:
    """Build the app around a control plane (created from ``settings`` when not given)."""
    plane = cp or ControlPlane(settings or Settings())
    owns = cp is None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # MLflow catch-up: everything now, then periodically (a worker thread; off at 0 s)
        background = plane.settings.mlflow_enabled and plane.mirror.start_background()
        operations.start()
        # alerts: judge evaluations committed while no server ran; then the webhook worker
        # (sweeps the ledger into the outbox and delivers; it also re-runs the alert catch-up)
        plane.alert_monitor.process()
        webhooks = plane.webhooks.start()
        yield
        if webhooks:
            plane.webhooks.stop()
        operations.stop()
        if background:
            plane.mirror.stop_background()
        if owns:
            plane.close()

    app = FastAPI(
        title="controlplane",
        version=__version__,
        description="Governance and audit control plane for preference-optimization "
        "pipelines: a verifiable ledger, an artifact registry with lineage, and RBAC.",
        lifespan=lifespan,
        responses=problems.RESPONSES,
    )
    app.state.cp = plane
    problems.install(app)
    for module in (health, principals, artifacts, governance, ledger):
        app.include_router(module.router)
    app.include_router(contract_routes.router)
    app.include_router(job_routes.router)
    app.include_router(mlflow_routes.router)
    app.include_router(alert_routes.router)
    app.add_middleware(BodyLimit, max_bytes=plane.settings.max_body_bytes)
    app.add_middleware(RejectNul)
    app.add_middleware(ConcurrencyLimit, limit=plane.settings.api_concurrency)
    # last, so outermost: request ids, access log, metrics (and /metrics)
    operations = observability.install(app, plane)
    return app
