"""Principals, tokens and role grants; authentication and the one authorization check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.authz import projections as _projections  # noqa: F401  (registers them)
from controlplane.authz.enforcer import ROLES, Authorizer
from controlplane.authz.tokens import hash_token, new_token, same_hash
from controlplane.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from controlplane.ledger.entry import SYSTEM_ACTOR
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import ApiTokenRow, PrincipalRow, RoleGrantRow

PRINCIPAL_KINDS = ("user", "service", "runner")


@dataclass(frozen=True)
class Principal:
    id: str
    kind: str
    display_name: str
    disabled: bool = False

    @classmethod
    def from_row(cls, row: PrincipalRow) -> Principal:
        return cls(row.id, row.kind, row.display_name, row.disabled)


@dataclass(frozen=True)
class IssuedToken:
    id: str
    principal_id: str
    token: str
    expires_at: datetime | None


def _aware(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class IdentityService:
    """Who is who, and what they may do. Every change is a ledger entry."""

    def __init__(self, store: LedgerStore, authorizer: Authorizer, token_ttl_days: int) -> None:
        self.store = store
        self.authorizer = authorizer
        self.token_ttl = timedelta(days=token_ttl_days)

    # -- principals ----------------------------------------------------------------------------

    def create_principal(
        self, actor: str, principal_id: str, kind: str = "user", display_name: str | None = None
    ) -> Principal:
        names.principal_id(principal_id)
        if principal_id == SYSTEM_ACTOR:
            raise InvalidInput(f"{SYSTEM_ACTOR!r} is reserved")
        if kind not in PRINCIPAL_KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(PRINCIPAL_KINDS)}")
        display = (display_name or principal_id).strip()[:200] or principal_id
        with self.store.transaction() as tx:
            tx.lock()  # take the ledger lock before checking for duplicates
            if tx.session.get(PrincipalRow, principal_id) is not None:
                raise Conflict(f"principal {principal_id!r} already exists")
            tx.append(
                actor=actor,
                action="principal.created",
                subject={"kind": "principal", "name": principal_id},
                payload={"kind": kind, "display_name": display},
            )
        return Principal(principal_id, kind, display)

    def disable_principal(self, actor: str, principal_id: str) -> Principal:
        with self.store.transaction() as tx:
            tx.lock()
            row = self._principal_row(tx.session, principal_id)
            if not row.disabled:
                tx.append(
                    actor=actor,
                    action="principal.disabled",
                    subject={"kind": "principal", "name": principal_id},
                    payload={},
                )
            return Principal(row.id, row.kind, row.display_name, True)

    def _principal_row(self, session: Session, principal_id: str) -> PrincipalRow:
        row = session.get(PrincipalRow, principal_id)
        if row is None:
            raise NotFound(f"principal {principal_id!r} does not exist")
        return row

    def get_principal(self, session: Session, principal_id: str) -> dict[str, Any]:
        row = self._principal_row(session, principal_id)
        grants = session.execute(
            select(RoleGrantRow).where(RoleGrantRow.principal_id == principal_id)
        ).scalars()
        return {
            "id": row.id,
            "kind": row.kind,
            "display_name": row.display_name,
            "disabled": row.disabled,
            "created_at": row.created_at,
            "created_by": row.created_by,
            "roles": [{"role": g.role, "project": g.project} for g in grants],
        }

    def list_principals(self, session: Session) -> list[dict[str, Any]]:
        ids = session.execute(select(PrincipalRow.id).order_by(PrincipalRow.id)).scalars()
        return [self.get_principal(session, principal_id) for principal_id in ids]

    # -- tokens --------------------------------------------------------------------------------

    def issue_token(
        self,
        actor: str,
        principal_id: str,
        name: str = "default",
        expires_in_days: int | None = None,
    ) -> IssuedToken:
        token_id, secret = new_token()
        now = clock.now()
        if expires_in_days is not None and expires_in_days <= 0:
            raise InvalidInput("expires_in_days must be positive")
        expires = now + (timedelta(days=expires_in_days) if expires_in_days else self.token_ttl)
        with self.store.transaction() as tx:
            tx.lock()
            row = self._principal_row(tx.session, principal_id)
            if row.disabled:
                raise Conflict(f"principal {principal_id!r} is disabled")
            tx.append(
                actor=actor,
                action="token.issued",
                subject={"kind": "principal", "name": principal_id},
                payload={"token_id": token_id, "name": name[:200], "expires_at": _iso(expires)},
            )
            tx.session.add(
                ApiTokenRow(
                    id=token_id,
                    principal_id=principal_id,
                    token_hash=hash_token(secret),
                    name=name[:200],
                    created_at=now,
                    expires_at=expires,
                )
            )
        return IssuedToken(token_id, principal_id, secret, expires)

    def revoke_token(self, actor: str, token_id: str) -> None:
        with self.store.transaction() as tx:
            tx.lock()
            row = tx.session.get(ApiTokenRow, token_id)
            if row is None:
                raise NotFound(f"token {token_id!r} does not exist")
            if row.revoked_at is None:
                tx.append(
                    actor=actor,
                    action="token.revoked",
                    subject={"kind": "principal", "name": row.principal_id},
                    payload={"token_id": token_id},
                )
                row.revoked_at = clock.now()

    def list_tokens(self, session: Session, principal_id: str) -> list[dict[str, Any]]:
        self._principal_row(session, principal_id)
        rows = session.execute(
            select(ApiTokenRow)
            .where(ApiTokenRow.principal_id == principal_id)
            .order_by(ApiTokenRow.created_at)
        ).scalars()
        return [
            {
                "id": r.id,
                "name": r.name,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
                "revoked_at": r.revoked_at,
            }
            for r in rows
        ]

    def authenticate(self, session: Session, token: str | None) -> Principal:
        """The principal behind a bearer token, or :class:`Unauthenticated`."""
        if not token:
            raise Unauthenticated("a bearer token is required")
        digest = hash_token(token)
        row = session.execute(
            select(ApiTokenRow).where(ApiTokenRow.token_hash == digest)
        ).scalar_one_or_none()
        if row is None or not same_hash(row.token_hash, digest):
            raise Unauthenticated("the token is not valid")
        if row.revoked_at is not None:
            raise Unauthenticated("the token was revoked")
        expires = _aware(row.expires_at)
        if expires is not None and expires <= clock.now():
            raise Unauthenticated("the token has expired")
        principal = session.get(PrincipalRow, row.principal_id)
        if principal is None or principal.disabled:
            raise Unauthenticated("the token's principal is disabled")
        return Principal.from_row(principal)

    # -- roles ---------------------------------------------------------------------------------

    def grant_role(self, actor: str, principal_id: str, role: str, project: str) -> None:
        self._check_role(role, project)
        with self.store.transaction() as tx:
            tx.lock()
            self._principal_row(tx.session, principal_id)
            if tx.session.get(RoleGrantRow, (principal_id, role, project)) is not None:
                raise Conflict(f"{principal_id!r} already has role {role!r} in {project!r}")
            tx.append(
                actor=actor,
                action="role.granted",
                subject={"kind": "principal", "name": principal_id},
                payload={"role": role, "project": project},
            )

    def revoke_role(self, actor: str, principal_id: str, role: str, project: str) -> None:
        self._check_role(role, project)
        with self.store.transaction() as tx:
            tx.lock()
            if tx.session.get(RoleGrantRow, (principal_id, role, project)) is None:
                raise NotFound(f"{principal_id!r} has no role {role!r} in {project!r}")
            tx.append(
                actor=actor,
                action="role.revoked",
                subject={"kind": "principal", "name": principal_id},
                payload={"role": role, "project": project},
            )

    @staticmethod
    def _check_role(role: str, project: str) -> None:
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
        if project != "*":
            names.project(project)

    # -- authorization ---------------------------------------------------------------------------

    def authorize(
        self,
        session: Session,
        principal: Principal,
        project: str,
        obj: str,
        act: str,
        *,
        any_project: bool = False,
        record_denial: bool = False,
    ) -> None:
        """The one authorization check. Raises :class:`Forbidden`.

        ``record_denial`` writes an ``access.denied`` entry: refused attempts to change
        something are part of the audit trail.
        """
        if project != "*":
            names.project(project)
        if self.authorizer.allowed(
            session, principal.id, project, obj, act, any_project=any_project
        ):
            return
        if record_denial:
            with self.store.transaction() as tx:
                tx.append(
                    actor=principal.id,
                    action="access.denied",
                    subject={"kind": obj, "name": project, "project": project},
                    payload={"object": obj, "action": act},
                )
        raise Forbidden(f"{principal.id!r} may not {act} {obj} in project {project!r}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
