"""A small lab for the runner tests: people, approved data, signed contracts, HTTP clients.

Setup goes through the real services of the served control plane (principals, approvals,
contract registration), because it is not what these tests are about; everything a runner or
an engineer does in a test goes over HTTP (``RunnerClient`` / ``httpx``) to the live server.
Datasets are registered over HTTP too, so their content is stored as it is in production.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from controlplane import clock
from controlplane.authz.service import Principal
from controlplane.client.api import ApiClient
from controlplane.contracts import statement as st
from controlplane.crypto.keys import public_key_b64
from controlplane.governance import statements
from controlplane.registry.refs import VersionRef
from controlplane.runners.sdk import RunnerClient
from tests.utils.server import LiveServer

PROJECT = "rlhf"
_ids = itertools.count()

RUBRIC = b"# Helpfulness v1\n\nPrefer the answer that answers the question.\n"


def rows(seed: str, count: int = 4) -> bytes:
    """A small valid preference dataset whose bytes depend on ``seed``."""
    lines = [
        {
            "prompt": f"Question {i} about {seed}?",
            "chosen": f"A helpful answer {i} about {seed}.",
            "rejected": f"No idea {i}.",
            "annotator": f"annotator-{i % 2}@example.com",
            "rubric": "helpfulness@1",
        }
        for i in range(count)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


@dataclass
class Actor:
    """A principal of a test, its API token and (for signers) its private key."""

    principal: Principal
    token: str
    key: Ed25519PrivateKey | None = None

    @property
    def id(self) -> str:
        return self.principal.id

    def key_pem(self) -> str:
        assert self.key is not None
        return self.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


@dataclass
class Lab:
    """One project on a served control plane, with the standard cast."""

    server: LiveServer
    project: str = PROJECT
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    _clients: list[ApiClient] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cp = self.server.cp
        self.eng = self.person("eng", "engineer")
        self.approver = self.person("appr", "approver", key=True)
        self.owner = self.person("owner", "data_owner", key=True)

    # -- people --------------------------------------------------------------------------------

    def person(
        self, principal_id: str, *roles: str, kind: str = "user", key: bool = False
    ) -> Actor:
        identity = self.cp.identity
        principal = identity.create_principal("admin", principal_id, kind)
        for role in roles:
            identity.grant_role("admin", principal_id, role, self.project)
        token = identity.issue_token("admin", principal_id, "test").token
        who = Actor(principal, token)
        if key:
            who.key = Ed25519PrivateKey.generate()
            self.cp.governance.register_key(
                principal, public_key_b64(who.key.public_key()), f"{principal_id}-key"
            )
        return who

    def runner(self, principal_id: str) -> Actor:
        return self.person(principal_id, "runner", kind="runner")

    def http(self, who: Actor) -> httpx.Client:
        return self.server.client(who.token)

    def sdk(self, who: Actor) -> RunnerClient:
        api = ApiClient(self.server.url, who.token)
        self._clients.append(api)
        return RunnerClient(api)

    def close(self) -> None:
        for api in self._clients:
            api.close()

    # -- data ----------------------------------------------------------------------------------

    def register_content(
        self, kind: str, name: str, content: bytes, uri: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"content": content.decode(), "filename": f"{name}.md"}
        if uri is not None:
            body["uri"] = uri
        with self.http(self.eng) as http:
            response = http.post(
                f"/v1/projects/{self.project}/artifacts/{kind}/{name}/versions", json=body
            )
        assert response.status_code == 201, response.text
        version: dict[str, Any] = response.json()
        self.versions[version["ref"]] = version
        return version

    def register_model(self, kind: str, name: str, digest: str, uri: str) -> dict[str, Any]:
        with self.http(self.eng) as http:
            response = http.post(
                f"/v1/projects/{self.project}/artifacts/{kind}/{name}/versions",
                json={"digest": digest, "uri": uri},
            )
        assert response.status_code == 201, response.text
        version: dict[str, Any] = response.json()
        self.versions[version["ref"]] = version
        return version

    def approve(self, version: dict[str, Any]) -> None:
        """``registered`` -> ``approved`` through a signed sign-off (contracts need it)."""
        governance = self.cp.governance
        ref = VersionRef(version["kind"], version["name"], version["version"])
        request = governance.open_request(
            self.eng.principal, self.project, ref, "approved", "reviewed for training"
        )
        with self.cp.db.read() as session:
            served = governance.request(session, request["id"])
        assert self.approver.key is not None
        envelope = statements.sign(
            statements.statement(served, self.approver.id, "approve", "ok", clock.now()),
            self.approver.key,
        )
        closed = governance.sign_off(self.approver.principal, request["id"], envelope)
        assert closed["state"] == "approved", closed

    def approved_data(self, seed: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A rubric (once) and a dataset following it, both approved."""
        rubric = self.versions.get("rubric/helpfulness@1")
        if rubric is None:
            rubric = self.register_content("rubric", "helpfulness", RUBRIC)
            self.approve(rubric)
        dataset = self.register_content("dataset", f"prefs-{seed}", rows(seed))
        self.approve(dataset)
        return rubric, dataset

    # -- contracts -----------------------------------------------------------------------------

    def statement(
        self,
        purpose: str,
        covers: list[dict[str, Any]],
        consumers: list[str],
        *,
        expires: datetime | None = None,
    ) -> st.ContractStatement:
        subjects = [
            st.Subject(
                self.project, v["kind"], v["name"], v["version"], v["digest"].split(":", 1)[1]
            )
            for v in covers
        ]
        rubric = next((s.full_name for s in subjects if s.kind == "rubric"), None)
        return st.build(
            contract_id=f"dc-{purpose}-{next(_ids)}",
            project=self.project,
            owner=self.owner.id,
            purpose=purpose,
            subjects=subjects,
            consumers=consumers,
            rubric=rubric,
            expires=expires or clock.now() + timedelta(days=30),
            created_at=clock.now(),
        )

    def contract(
        self,
        purpose: str,
        covers: list[dict[str, Any]],
        consumers: list[str],
        *,
        expires: datetime | None = None,
    ) -> dict[str, Any]:
        """A contract signed by the owner and registered; its envelope."""
        assert self.owner.key is not None
        envelope = st.sign(
            self.statement(purpose, covers, consumers, expires=expires), self.owner.key
        )
        self.cp.contracts.register(self.owner.principal, self.project, envelope)
        return envelope

    @staticmethod
    def contract_id(envelope: dict[str, Any]) -> str:
        return str(json.loads(base64.b64decode(envelope["payload"]))["predicate"]["id"])

    # -- jobs ----------------------------------------------------------------------------------

    def queue(self, trainer: str, **body: Any) -> dict[str, Any]:
        with self.http(self.eng) as http:
            response = http.post(
                f"/v1/projects/{self.project}/jobs", json={"trainer": trainer, **body}
            )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def job(self, job_id: int) -> dict[str, Any]:
        with self.cp.db.read() as session:
            return self.cp.jobs.get(session, job_id)

    # -- the ledger ----------------------------------------------------------------------------

    def size(self) -> int:
        with self.cp.db.read() as session:
            return self.cp.store.size(session)

    def entries(self, start: int = 0, action: str | None = None) -> list[dict[str, Any]]:
        with self.cp.db.read() as session:
            return self.cp.store.entries(session, start, limit=10**6, action=action)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
