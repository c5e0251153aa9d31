"""Training jobs (queue, claim, heartbeat, finish, fail, release, cancel) and stored content."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, status

from controlplane import names
from controlplane.api.deps import CP, Caller, ReadSession
from controlplane.api.problems import json_object
from controlplane.api.schemas import (
    JobCancel,
    JobClaim,
    JobCreate,
    JobFail,
    JobFinish,
    JobHeartbeat,
    JobRelease,
)
from controlplane.runners.content import BLOB_KINDS
from controlplane.runners.service import STATES
from controlplane.runners.spec import TRAINERS, JobRequest

router = APIRouter(prefix="/v1", tags=["jobs"])


def _job_project(cp: CP, session: ReadSession, caller: Caller, job_id: int, act: str) -> str:
    project = cp.jobs.project_of(session, job_id)
    cp.identity.authorize(session, caller, project, "jobs", act, record_denial=act != "read")
    return project


@router.post("/projects/{project}/jobs", status_code=status.HTTP_201_CREATED)
def queue_job(
    project: str, body: JobCreate, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Queue a training job; every input is resolved to its digest now and pinned."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "jobs", "queue", record_denial=True)
    request = JobRequest.build(
        body.trainer,
        body.datasets,
        rubric=body.rubric,
        base_model=body.base_model,
        reward_model=body.reward_model,
        policy=body.policy,
        reference=body.reference,
        hyperparameters=body.hyperparameters,
        output_name=body.output_name,
    )
    return cp.jobs.queue(caller, project, request)


@router.get("/projects/{project}/jobs")
def list_jobs(
    project: str,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    state: Annotated[str | None, Query(pattern="^(" + "|".join(STATES) + ")$")] = None,
    trainer: Annotated[str | None, Query(pattern="^(" + "|".join(TRAINERS) + ")$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Jobs of a project, newest first (expired leases are requeued first)."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "jobs", "read")
    cp.jobs.expire_due()
    with cp.db.read() as fresh:
        data = cp.jobs.list(fresh, project, state, trainer, limit)
    return {"data": data, "count": len(data)}


@router.post("/projects/{project}/jobs/claim")
def claim_next(
    project: str, body: JobClaim, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Claim the oldest queued job the presented contract covers: ``{"job": null}`` when
    none; 403 ``contract-rejected`` (ledgered) when the contract does not verify for it."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "jobs", "claim", record_denial=True)
    job = cp.jobs.claim_next(caller, project, body.contract, body.lease_seconds, body.trainers)
    return {"job": job}


@router.get("/jobs/{job_id}")
def get_job(job_id: int, cp: CP, session: ReadSession, caller: Caller) -> dict[str, Any]:
    _job_project(cp, session, caller, job_id, "read")
    return cp.jobs.get(session, job_id)


@router.post("/jobs/{job_id}/claim")
def claim(
    job_id: int, body: JobClaim, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Claim this job by presenting a data contract; a refusal is ledgered."""
    _job_project(cp, session, caller, job_id, "claim")
    return cp.jobs.claim(caller, job_id, body.contract, body.lease_seconds)


@router.post("/jobs/{job_id}/heartbeat")
def heartbeat(
    job_id: int, body: JobHeartbeat, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Renew the lease (not ledgered); 409 once the claim is no longer the caller's."""
    _job_project(cp, session, caller, job_id, "heartbeat")
    return cp.jobs.heartbeat(caller, job_id, body.claim, body.progress)


@router.post("/jobs/{job_id}/release")
def release(
    job_id: int, body: JobRelease, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Give the job back to the queue (a runner stopping)."""
    _job_project(cp, session, caller, job_id, "heartbeat")
    return cp.jobs.release(caller, job_id, body.claim, body.reason)


@router.post("/jobs/{job_id}/finish")
def finish(
    job_id: int, body: JobFinish, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Report the output: registered with lineage in the same transaction as job.finished."""
    _job_project(cp, session, caller, job_id, "finish")
    return cp.jobs.finish(
        caller,
        job_id,
        body.claim,
        digest=body.digest,
        uri=body.uri,
        metrics=body.metrics,
        mlflow_run_id=body.mlflow_run_id,
        parameters=body.parameters,
    )


@router.post("/jobs/{job_id}/fail")
def fail(
    job_id: int, body: JobFail, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    _job_project(cp, session, caller, job_id, "finish")
    return cp.jobs.fail(caller, job_id, body.claim, body.reason)


@router.post("/jobs/{job_id}/cancel")
def cancel(
    job_id: int, body: JobCancel, cp: CP, session: ReadSession, caller: Caller
) -> dict[str, Any]:
    """Cancel a queued or claimed job (who queued it, or an admin)."""
    project = _job_project(cp, session, caller, job_id, "cancel")
    is_admin = cp.authorizer.allowed(session, caller.id, project, "jobs", "administer")
    return cp.jobs.cancel(caller, job_id, body.reason, is_admin=is_admin)


# -- content ---------------------------------------------------------------------------------


@router.put(
    "/projects/{project}/content/{digest}",
    responses={201: json_object("Stored now (200: these bytes were stored before)")},
)
def put_content(
    project: str,
    digest: str,
    data: Annotated[bytes, Body(media_type="application/octet-stream")],
    response: Response,
    cp: CP,
    session: ReadSession,
    caller: Caller,
    kind: Annotated[str, Query(pattern="^(" + "|".join(BLOB_KINDS) + ")$")] = "file",
) -> dict[str, Any]:
    """Store the bytes of a digest (the raw request body); refused unless they hash to it.

    A directory is uploaded as each file, then its manifest with ``kind=manifest``.
    """
    names.project(project)
    cp.identity.authorize(session, caller, project, "content", "upload", record_denial=True)
    info, created = cp.content.put(caller.id, project, data, digest=digest, kind=kind)
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return {**info, "created": created}


@router.get(
    "/projects/{project}/content/{digest}",
    response_class=Response,
    responses={
        200: {
            "description": "The stored bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
def get_content(
    project: str, digest: str, cp: CP, session: ReadSession, caller: Caller
) -> Response:
    """The stored bytes (``X-Content-Kind: file`` or ``manifest``); check them against the
    digest you asked for: this server is not to be trusted either."""
    names.project(project)
    cp.identity.authorize(session, caller, project, "artifacts", "read")
    row = cp.content.get(session, project, digest)
    return Response(
        content=bytes(row.data),
        media_type="application/octet-stream",
        headers={"X-Content-Kind": row.kind, "X-Content-Digest": row.digest},
    )
