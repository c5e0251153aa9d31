"""A small world for the security tests: in a project, a model, approved data, an open
promotion request, a registered data contract, a queued job and stored content.

Set up through the real services as the bootstrap admin: it is what requests are about, not
what the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.authz.service import Principal
from controlplane.contracts import statement as st
from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.crypto.keys import public_key_b64
from controlplane.governance import statements
from controlplane.registry.refs import VersionRef
from controlplane.runners.spec import JobRequest
from tests.api.helpers import digest_of

CONTENT = b"bytes behind a digest, stored for the security tests\n"
ADMIN = Principal(BOOTSTRAP_ADMIN, "user", "Bootstrap admin")


@dataclass
class Resources:
    """What exists in one project: a model, approved data, a request, a contract, a job."""

    request_id: int
    contract_id: str
    job_id: int
    content_digest: str


def seed_project(
    cp: ControlPlane, project: str, approver: Principal, owner: Principal
) -> Resources:
    """``reward_model/m@1`` (with an open request to candidate), ``rubric/r@1`` and
    ``dataset/d@1`` (approved), contract ``dc-sec-<project>`` over them, a queued job and
    stored content. ``approver`` and ``owner`` hold approver and data_owner in ``project``."""
    admin = ADMIN
    registry, governance = cp.registry, cp.governance
    for kind, name in (("reward_model", "m"), ("rubric", "r"), ("dataset", "d")):
        registry.register_version(
            admin.id,
            project,
            kind,
            name,
            digest=digest_of(f"{project}/{kind}/{name}".encode()),
            uri=f"s3://sec/{project}/{name}",
        )
    approver_key, owner_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    governance.register_key(approver, public_key_b64(approver_key.public_key()), f"a-{project}")
    governance.register_key(owner, public_key_b64(owner_key.public_key()), f"o-{project}")
    approved = []
    for kind, name in (("rubric", "r"), ("dataset", "d")):
        opened = governance.open_request(
            admin, project, VersionRef(kind, name, 1), "approved", "reviewed"
        )
        with cp.db.read() as session:
            served = governance.request(session, opened["id"])
        envelope = statements.sign(
            statements.statement(served, approver.id, "approve", "ok", clock.now()), approver_key
        )
        assert governance.sign_off(approver, opened["id"], envelope)["state"] == "approved"
        with cp.db.read() as session:
            approved.append(registry.get_version(session, project, VersionRef(kind, name, 1)))
    subjects = [
        st.Subject(project, v["kind"], v["name"], v["version"], v["digest"].split(":", 1)[1])
        for v in approved
    ]
    contract_id = f"dc-sec-{project}"
    statement = st.build(
        contract_id=contract_id,
        project=project,
        owner=owner.id,
        purpose="reward_model",
        subjects=subjects,
        consumers=["nobody"],
        rubric=subjects[0].full_name,
        expires=clock.now() + timedelta(days=30),
        created_at=clock.now(),
    )
    cp.contracts.register(owner, project, st.sign(statement, owner_key))
    request = governance.open_request(
        admin, project, VersionRef("reward_model", "m", 1), "candidate", "for the security tests"
    )
    job = cp.jobs.queue(
        admin, project, JobRequest.build("reward_model", ["dataset/d@1"], rubric="rubric/r@1")
    )
    info, _ = cp.content.put(admin.id, project, CONTENT)
    return Resources(request["id"], contract_id, job["id"], str(info["digest"]))


def seed(cp: ControlPlane, projects: tuple[str, ...]) -> dict[str, Resources]:
    """:func:`seed_project` for each of ``projects``, with one approver and one data owner
    (``sec-approver``, ``sec-owner``) for all of them; once per database."""
    identity = cp.identity
    approver = identity.create_principal(BOOTSTRAP_ADMIN, "sec-approver")
    owner = identity.create_principal(BOOTSTRAP_ADMIN, "sec-owner")
    for project in projects:
        identity.grant_role(BOOTSTRAP_ADMIN, approver.id, "approver", project)
        identity.grant_role(BOOTSTRAP_ADMIN, owner.id, "data_owner", project)
    return {project: seed_project(cp, project, approver, owner) for project in projects}
