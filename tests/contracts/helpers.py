"""Builders for the data-contract tests: a data owner with a sign-off key, approved dataset and
rubric versions, contract statements and envelopes, and ledger look-ups.

Everything goes through the real services of a :class:`ControlPlane` on a real database (the
promotion workflow approves the data: one request, one sign-off by an approver). Envelopes are
signed the way ``controlplane contract sign`` signs them, here, on the "owner's machine".
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.contracts import statement as st
from controlplane.crypto.dsse import sign_envelope
from controlplane.ledger.canonical import canonical_json
from tests.governance.helpers import Person, World

PROJECT = "gov"


def subject_of(version: dict[str, Any]) -> st.Subject:
    return st.Subject(
        version["project"],
        version["kind"],
        version["name"],
        version["version"],
        version["digest"].split(":", 1)[1],
    )


def payload_of(envelope: dict[str, Any]) -> dict[str, Any]:
    return json.loads(base64.b64decode(envelope["payload"]))  # type: ignore[no-any-return]


def resigned(envelope: dict[str, Any], key: Ed25519PrivateKey, **predicate: Any) -> dict:
    """The envelope's statement with ``predicate`` fields changed, signed again by ``key``."""
    statement = payload_of(envelope)
    statement["predicate"].update(predicate)
    return sign_envelope(st.PAYLOAD_TYPE, canonical_json(statement), key)


def altered(envelope: dict[str, Any], **predicate: Any) -> dict[str, Any]:
    """The envelope with its payload changed but the old signature kept: a forgery."""
    statement = payload_of(envelope)
    statement["predicate"].update(predicate)
    return {**envelope, "payload": base64.b64encode(canonical_json(statement)).decode()}


class Contracts:
    """A data owner (``olga``) in the standard governance world, and contract builders."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.cp = world.cp
        self.owner = world.person("olga", "data_owner")

    def approved(self, kind: str = "dataset", name: str = "prefs") -> dict[str, Any]:
        version = self.world.register(kind, name)
        self.world.approve_data(version)
        return self.world.version(version)

    def statement(
        self,
        *versions: dict[str, Any],
        contract_id: str = "c-1",
        owner: Person | None = None,
        purpose: str = "dpo",
        consumers: tuple[str, ...] = ("runner-1",),
        days: float = 30,
        **extra: Any,
    ) -> st.ContractStatement:
        now = clock.now()
        rubric = next((v for v in versions if v["kind"] == "rubric"), None)
        return st.build(
            contract_id=contract_id,
            project=versions[0]["project"],
            owner=(owner or self.owner).id,
            purpose=purpose,
            subjects=[subject_of(v) for v in versions],
            consumers=consumers,
            rubric=subject_of(rubric).full_name if rubric else None,
            expires=now + timedelta(days=days),
            created_at=now,
            **extra,
        )

    def envelope(
        self, *versions: dict[str, Any], key: Ed25519PrivateKey | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return st.sign(self.statement(*versions, **kwargs), key or self.owner.key)

    def register(
        self, envelope: dict[str, Any], by: Person | None = None
    ) -> tuple[dict[str, Any], bool]:
        return self.cp.contracts.register((by or self.owner).principal, PROJECT, envelope)

    def check(self, presented: dict[str, Any] | str, *digests: str, **overrides: Any) -> Any:
        args: dict[str, Any] = {
            "input_digests": list(digests),
            "purpose": "dpo",
            "consumer": "runner-1",
            "project": PROJECT,
        }
        args.update(overrides)
        with self.cp.db.read() as session:
            return self.cp.contracts.check_for_job(session, presented, **args)
