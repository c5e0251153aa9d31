"""Wiring: one object that owns the database, the ledger store and the domain services.

Interfaces (API, CLI, dashboard, tests) build a :class:`ControlPlane` from :class:`Settings`
and call its services; nothing else constructs engines or reads key files.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from controlplane.authz.enforcer import Authorizer
from controlplane.authz.service import SYSTEM_ACTOR, IdentityService
from controlplane.config import Settings
from controlplane.contracts.service import ContractService
from controlplane.crypto.keys import (
    key_id,
    load_or_create_private_key,
    load_private_key,
    public_key_b64,
    replace_private_key,
    restore_private_key,
)
from controlplane.errors import Conflict
from controlplane.governance.alerts import AlertMonitor, load_rules
from controlplane.governance.rules import RuleSet
from controlplane.governance.service import GovernanceService
from controlplane.integrations.mlflow.mirror import MlflowMirror
from controlplane.ledger.canonical import canonical_json
from controlplane.ops.witness import CheckpointWitness
from controlplane.registry.digests import digest_bytes
from controlplane.registry.erasure import AnnotatorErasure
from controlplane.registry.service import RegistryService
from controlplane.runners.content import ContentStore
from controlplane.runners.openlineage import LineageEmitter
from controlplane.runners.service import JobService
from controlplane.store import keys_projection as _keys  # noqa: F401  (registers it)
from controlplane.store import migrate
from controlplane.store.database import Database
from controlplane.store.ledger_store import LedgerStore, Signer, Transaction
from controlplane.store.models import LedgerEntryRow, PrincipalRow, ServerKeyRow
from controlplane.webhooks.outbox import WebhookOutbox

BOOTSTRAP_ADMIN = "admin"


@dataclass(frozen=True)
class InitResult:
    created_admin: bool
    admin_token: str | None
    key_registered: bool


class ControlPlane:
    """The control plane's services over one database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.resolved_database_url, concurrency=settings.api_concurrency)
        self._key = load_or_create_private_key(settings.resolved_signing_key_file)
        registered = self._registered_origin()
        origin = registered or settings.origin or f"controlplane.local/{secrets.token_hex(4)}"
        key_file = settings.resolved_signing_key_file
        self.store = LedgerStore(
            self.db,
            Signer(self._checked_origin(origin, registered), self._key),
            key_loader=lambda: load_private_key(key_file),  # follows a rotation elsewhere
        )
        self.witness: CheckpointWitness | None = None
        if settings.witness_dir is not None:  # each new signed checkpoint, written once
            self.witness = CheckpointWitness(settings.witness_dir, self.store)
            self.store.listeners.append(self.witness.on_commit)
        if settings.mlflow_enabled:  # mirror reward models and policies after each commit
            self.store.listeners.append(self.mirror.on_commit)
        # alert rules (fail closed at start), then the webhook outbox wake-up (see webhooks/)
        self.alert_monitor = AlertMonitor(
            self.store, load_rules(settings.policies_dir / "alerts.yaml")
        )
        self.store.listeners.append(self.alert_monitor.on_commit)
        self.webhooks = WebhookOutbox(settings, self.store, self.alert_monitor.process)
        if self.webhooks.enabled:
            self.store.listeners.append(self.webhooks.on_commit)

    @property
    def signer(self) -> Signer:
        return self.store.signer

    def _checked_origin(self, origin: str, registered: str | None) -> str:
        wanted = self.settings.origin
        if registered is not None and wanted is not None and wanted != registered:
            raise Conflict(
                f"CONTROLPLANE_ORIGIN is {wanted!r} but this ledger is named {registered!r}; "
                "a ledger keeps its origin for life"
            )
        return origin

    def _registered_origin(self) -> str | None:
        """The origin this database's ledger was created with (None before the first init)."""
        try:
            with self.db.read() as session:
                return session.execute(
                    select(ServerKeyRow.note_name)
                    .order_by(ServerKeyRow.registered_seq.desc())
                    .limit(1)
                ).scalar_one_or_none()
        except (OperationalError, ProgrammingError):
            return None  # not migrated yet

    @cached_property
    def authorizer(self) -> Authorizer:
        return Authorizer(self.settings.policies_dir)

    @cached_property
    def identity(self) -> IdentityService:
        return IdentityService(self.store, self.authorizer, self.settings.token_ttl_days)

    @cached_property
    def registry(self) -> RegistryService:
        return RegistryService(self.store, self.settings.pseudonym_key())

    @cached_property
    def governance(self) -> GovernanceService:
        return GovernanceService(self.store, self.registry)

    @cached_property
    def contracts(self) -> ContractService:
        return ContractService(self.store, self.settings.pseudonym_key())

    @cached_property
    def erasure(self) -> AnnotatorErasure:
        return AnnotatorErasure(self.store, self.settings.pseudonym_key())

    @cached_property
    def content(self) -> ContentStore:
        return ContentStore(self.db, self.settings.max_body_bytes)

    @cached_property
    def jobs(self) -> JobService:
        lineage = LineageEmitter(self.settings, self.signer.origin)
        return JobService(
            self.store,
            self.registry,
            lambda: self.contracts,
            lineage,
            self.settings.job_lease_seconds,
        )

    @cached_property
    def mirror(self) -> MlflowMirror:
        """The MLflow model registry mirror (MLflow is imported only when it syncs)."""
        return MlflowMirror(self.settings, self.store)

    def migrate(self) -> None:
        migrate.upgrade(self.db.url, self.settings)

    def init(self) -> InitResult:
        """Migrate, register the signing key and create the bootstrap admin (idempotent).

        Safe when several replicas start at once: the checks run under the ledger lock.
        """
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.migrate()
        public = self._key.public_key()
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            registered = session.execute(
                select(ServerKeyRow.note_name).order_by(ServerKeyRow.registered_seq.desc()).limit(1)
            ).scalar_one_or_none()
            if registered is not None:  # another replica may have named the ledger meanwhile
                origin = self._checked_origin(registered, registered)
                self.store.signer = Signer(origin, self._key)
            key_registered = session.get(ServerKeyRow, key_id(public)) is None
            if key_registered:
                tx.append(
                    actor=SYSTEM_ACTOR,
                    action="server_key.registered",
                    subject={"kind": "server_key", "name": self.signer.origin},
                    payload={
                        "key_id": key_id(public),
                        "note_name": self.signer.origin,
                        "public_key": public_key_b64(public),
                        "verifier": str(self.signer.verifier),
                    },
                )
            self._record_policy(tx)
            _, raw_rules = RuleSet.load(self.settings.policies_dir / "promotion.yaml")
            self.governance.install_rules(tx, raw_rules)
            needs_admin = session.execute(select(PrincipalRow.id).limit(1)).first() is None
        token = None
        if needs_admin:
            try:
                self.identity.create_principal(
                    SYSTEM_ACTOR, BOOTSTRAP_ADMIN, "user", "Bootstrap admin"
                )
            except Conflict:  # another replica initialised the database at the same time
                return InitResult(False, None, key_registered)
            self.identity.grant_role(SYSTEM_ACTOR, BOOTSTRAP_ADMIN, "admin", "*")
            token = self.identity.issue_token(SYSTEM_ACTOR, BOOTSTRAP_ADMIN, "bootstrap").token
            path = self.settings.admin_token_file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(token + "\n")
            path.chmod(0o600)
        return InitResult(needs_admin, token, key_registered)

    def rotate_server_key(self, reason: str = "") -> dict[str, Any]:
        """Replace the checkpoint signing key: a ``server_key.rotated`` entry, a new key file.

        Under the ledger lock: check that the key file holds the current key, append the
        rotation entry (new key, the key it retires), put the new key file in place, and
        commit, so the checkpoint over the rotation is the first one signed by the new key.
        The old key stays registered as retired (checkpoints up to the rotation's seq verify
        against it; later ones signed by it are refused) and its private key file is deleted
        after the commit. Other processes sharing the key file re-read it when they see the
        ledger's current key change (:meth:`LedgerStore.current_signer`).
        """
        path = self.settings.resolved_signing_key_file
        fresh = Ed25519PrivateKey.generate()
        previous = self.store.signer
        backup = None
        try:
            with self.store.transaction() as tx:
                tx.lock()
                current = tx.session.execute(
                    select(ServerKeyRow).where(ServerKeyRow.retired_seq.is_(None))
                ).scalar_one_or_none()
                if current is None:
                    raise Conflict("no checkpoint key is registered yet: run `controlplane init`")
                previous_id = current.key_id
                on_disk = key_id(load_private_key(path).public_key())
                if on_disk != current.key_id:
                    raise Conflict(
                        f"the key file {path} holds key {on_disk[:16]}…, not the ledger's "
                        f"current key {current.key_id[:16]}…: rotate with the key file the "
                        "servers use"
                    )
                signer = Signer(current.note_name, fresh)
                entry = tx.append(
                    actor=SYSTEM_ACTOR,
                    action="server_key.rotated",
                    subject={"kind": "server_key", "name": signer.origin},
                    payload={
                        "key_id": key_id(fresh.public_key()),
                        "note_name": signer.origin,
                        "public_key": public_key_b64(fresh.public_key()),
                        "verifier": str(signer.verifier),
                        "previous_key_id": current.key_id,
                        "previous_verifier": current.verifier,
                        "reason": reason[:500],
                    },
                )
                backup = replace_private_key(path, fresh)
                self.store.signer = signer
        except BaseException:
            if backup is not None:
                restore_private_key(path, backup)
                self.store.signer = previous
            raise
        assert backup is not None
        backup.unlink()  # the retired private key signs nothing any more
        self._key = fresh
        return {
            "seq": entry.seq,
            "key_id": entry.payload["key_id"],
            "verifier": entry.payload["verifier"],
            "previous_key_id": previous_id,
            "key_file": str(path),
        }

    def _record_policy(self, tx: Transaction) -> None:
        """Ledger the authorization policy in force whenever its files change.

        The model and default policy live in ``policies/``; each start compares their digest
        with the last ``policy.installed`` entry, so any change is on the record.
        """
        files = {
            name: (self.settings.policies_dir / name).read_text()
            for name in ("model.conf", "policy.csv")
        }
        digest = digest_bytes(canonical_json(files))
        last = tx.session.execute(
            select(LedgerEntryRow.payload)
            .where(LedgerEntryRow.action == "policy.installed")
            .order_by(LedgerEntryRow.seq.desc())
            .limit(1)
        ).scalar_one_or_none()
        if last is None or json.loads(last).get("digest") != digest:
            tx.append(
                actor=SYSTEM_ACTOR,
                action="policy.installed",
                subject={"kind": "policy_set", "name": "authorization"},
                payload={"digest": digest, "files": files},
            )

    def close(self) -> None:
        self.webhooks.close()
        if "mirror" in self.__dict__:  # stop its worker thread, if it started one
            self.mirror.close()
        self.db.dispose()
