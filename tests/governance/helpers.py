"""Builders for the promotion-governance tests: people with roles and sign-off keys, artifacts,
evaluations, requests, signed sign-offs, a pinned clock and ledger look-ups.

Everything goes through the real services of a :class:`ControlPlane` (``cp.identity``,
``cp.registry``, ``cp.governance``) on a real database; nothing is mocked. Sign-off envelopes
are built the way the CLI builds them (``statements.statement`` + ``statements.sign``) on the
"approver's machine", i.e. here, with a private key the server never sees.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane import clock
from controlplane.authz.service import Principal
from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.crypto.keys import key_id, public_key_b64
from controlplane.errors import ControlPlaneError
from controlplane.governance import statements
from controlplane.registry.refs import VersionRef

PROJECT = "gov"
T0 = datetime(2031, 3, 3, 9, 0, tzinfo=UTC)
GOOD = {"win_rate": 0.61, "safety_violation_rate": 0.004}
_seeds = itertools.count()


# -- time ----------------------------------------------------------------------------------------


class PinnedClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> datetime:
        self.now = moment
        return moment

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@contextmanager
def pinned_clock(start: datetime = T0) -> Iterator[PinnedClock]:
    """Replace ``controlplane.clock.now_fn`` for the block; always restore it."""
    saved = clock.now_fn
    pinned = PinnedClock(start)
    clock.now_fn = pinned
    try:
        yield pinned
    finally:
        clock.now_fn = saved


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- people --------------------------------------------------------------------------------------


@dataclass
class Person:
    principal: Principal
    roles: tuple[str, ...]
    keys: list[Ed25519PrivateKey] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.principal.id

    @property
    def key(self) -> Ed25519PrivateKey:
        return self.keys[-1]

    @property
    def key_id(self) -> str:
        return key_id(self.key.public_key())


def digest(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


# -- the world -----------------------------------------------------------------------------------


class World:
    """One project with a standard cast, on one control plane.

    ``eng`` (engineer) opens requests; ``trainer`` (engineer) registers the versions, so it is
    their creator; ``alice``, ``bob`` and ``dave`` are approvers; ``carol`` is the compliance
    reviewer. ``admin`` is the bootstrap admin (with a sign-off key, so that a refusal of its
    sign-off is about its role and nothing else). Everyone but eng, trainer and alice is
    created on first use: touch them *before* measuring ledger growth.
    """

    def __init__(self, cp: ControlPlane, project: str = PROJECT) -> None:
        self.cp = cp
        self.project = project
        self.eng = self.person("eng", "engineer")
        self.trainer = self.person("trainer", "engineer")
        self.alice = self.person("alice", "approver")

    # the rest of the cast appears on first use (a cheaper setup on PostgreSQL)

    @cached_property
    def bob(self) -> Person:
        return self.person("bob", "approver")

    @cached_property
    def dave(self) -> Person:
        return self.person("dave", "approver")

    @cached_property
    def carol(self) -> Person:
        return self.person("carol", "compliance_reviewer")

    @cached_property
    def admin(self) -> Person:
        admin = Person(Principal(BOOTSTRAP_ADMIN, "user", "Bootstrap admin"), ("admin",))
        self.add_key(admin)
        return admin

    # people and keys

    def person(self, principal_id: str, *roles: str, key: bool = True) -> Person:
        principal = self.cp.identity.create_principal(BOOTSTRAP_ADMIN, principal_id)
        for role in roles:
            self.cp.identity.grant_role(BOOTSTRAP_ADMIN, principal_id, role, self.project)
        who = Person(principal, roles)
        if key:
            self.add_key(who)
        return who

    def add_key(self, who: Person) -> dict[str, Any]:
        private = Ed25519PrivateKey.generate()
        registered = self.cp.governance.register_key(
            who.principal, public_key_b64(private.public_key()), f"{who.id}-laptop"
        )
        who.keys.append(private)
        return registered

    # artifacts

    def register(
        self,
        kind: str,
        name: str,
        *,
        by: Person | None = None,
        lineage: Sequence[tuple[str, dict[str, Any]]] = (),
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        seed = f"{kind}/{name}/{next(_seeds)}"
        version, created = self.cp.registry.register_version(
            (by or self.trainer).id,
            self.project,
            kind,
            name,
            digest=digest(seed),
            uri=f"s3://artifacts/{seed}",
            metadata=metadata,
            lineage=[
                {
                    "relation": relation,
                    "kind": parent["kind"],
                    "name": parent["name"],
                    "version": parent["version"],
                }
                for relation, parent in lineage
            ],
        )
        assert created
        return version

    def evaluation(
        self, target: dict[str, Any], mode: str, metrics: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An ``evaluation`` version linked ``evaluated_on`` ``target``."""
        return self.register(
            "evaluation",
            f"eval-{target['name']}-{mode}",
            lineage=[("evaluated_on", target)],
            metadata={"mode": mode, "metrics": dict(GOOD if metrics is None else metrics)},
        )

    def ref(self, version: dict[str, Any]) -> VersionRef:
        return VersionRef(version["kind"], version["name"], version["version"])

    def version(self, version: dict[str, Any]) -> dict[str, Any]:
        with self.cp.db.read() as session:
            return self.cp.registry.get_version(session, self.project, self.ref(version))

    def stage(self, version: dict[str, Any]) -> str:
        return str(self.version(version)["stage"])

    # requests and sign-offs

    def open(
        self,
        version: dict[str, Any],
        to: str,
        *,
        by: Person | None = None,
        traffic_share: float | None = None,
    ) -> dict[str, Any]:
        return self.cp.governance.open_request(
            (by or self.eng).principal,
            self.project,
            self.ref(version),
            to,
            f"{version['ref']} is ready for {to}",
            traffic_share,
        )

    def request(self, request_id: int) -> dict[str, Any]:
        with self.cp.db.read() as session:
            return self.cp.governance.request(session, request_id)

    def requests(self, state: str | None = None) -> list[dict[str, Any]]:
        with self.cp.db.read() as session:
            return self.cp.governance.requests(session, self.project, state)

    def envelope(
        self,
        who: Person,
        request: dict[str, Any],
        decision: str = "approve",
        *,
        comment: str = "looks good",
        signed_at: datetime | None = None,
        key: Ed25519PrivateKey | None = None,
    ) -> dict[str, Any]:
        """What the CLI signs on ``who``'s machine for ``request`` (as the API serves it)."""
        statement = statements.statement(
            request, who.id, decision, comment, signed_at or clock.now()
        )
        return statements.sign(statement, key or who.key)

    def sign(
        self, who: Person, request_id: int, decision: str = "approve", **kwargs: Any
    ) -> dict[str, Any]:
        envelope = self.envelope(who, self.request(request_id), decision, **kwargs)
        return self.cp.governance.sign_off(who.principal, request_id, envelope)

    def promote(
        self,
        version: dict[str, Any],
        to: str,
        approvers: tuple[Person, ...] | None = None,
        *,
        traffic_share: float | None = None,
    ) -> dict[str, Any]:
        """Open a request and sign it until quorum; return the closed request."""
        if approvers is None:
            approvers = (
                (self.alice, self.carol) if to in ("canary", "production") else (self.alice,)
            )
        request = self.open(version, to, traffic_share=traffic_share)
        for who in approvers:
            request = self.sign(who, request["id"])
        assert request["state"] == "approved", request
        assert self.stage(version) == to
        return request

    def to_production(self, version: dict[str, Any]) -> None:
        """The whole path: candidate -> staging -> canary -> production, with evidence."""
        self.promote(version, "candidate")
        self.evaluation(version, "offline")
        self.promote(version, "staging")
        self.promote(version, "canary", traffic_share=0.1)
        self.evaluation(version, "online")
        self.promote(version, "production")

    def approve_data(self, version: dict[str, Any]) -> None:
        self.promote(version, "approved")

    # the ledger

    def size(self) -> int:
        with self.cp.db.read() as session:
            return self.cp.store.size(session)

    def entries(self, action: str | None = None, start: int = 0) -> list[dict[str, Any]]:
        with self.cp.db.read() as session:
            return self.cp.store.entries(session, start, limit=10**6, action=action)

    def refused(
        self,
        call: Callable[[], Any],
        action: str,
        reason: str,
        error: type[ControlPlaneError] = ControlPlaneError,
    ) -> dict[str, Any]:
        """``call`` fails with ``error`` whose message contains ``reason``, and the only new
        ledger entry (besides an expiry) is ``action`` carrying the same reason. Returns it."""
        before = self.size()
        with pytest.raises(error) as raised:
            call()
        assert reason in raised.value.detail, raised.value.detail
        new = [e for e in self.entries(start=before) if e["action"] != "promotion.expired"]
        assert [e["action"] for e in new] == [action], new
        assert reason in new[0]["payload"]["reason"], new[0]
        assert new[0]["payload"]["reason"] == raised.value.detail
        return new[0]
