"""The casbin enforcer: model and default policy from ``policies/``, role grants from the
database (a projection of the ledger), reloaded when the grants change.

Several API replicas share one database; each notices a change through the highest ledger seq
of a role entry, one indexed query per authorization, so a revoked role stops working on every
replica at the next request.
"""

from __future__ import annotations

import threading
from pathlib import Path

import casbin
from casbin import persist
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.store.models import LedgerEntryRow, RoleGrantRow

ROLES = ("admin", "engineer", "approver", "compliance_reviewer", "runner", "data_owner")
ROLE_ACTIONS = ("role.granted", "role.revoked")


def subject(principal_id: str) -> str:
    """Principals live in their own casbin namespace, so a principal named like a role
    (``runner``) can never stand for that role."""
    return f"principal:{principal_id}"


class _GrantsAdapter(persist.Adapter):  # type: ignore[misc]
    """Loads ``p`` rules from policy.csv and ``g`` rules from the given grants."""

    def __init__(self, policy_file: Path, grants: list[tuple[str, str, str]]) -> None:
        self._policy_file = policy_file
        self._grants = grants

    def load_policy(self, model: casbin.model.Model) -> None:
        for raw in self._policy_file.read_text().splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                persist.load_policy_line(line, model)
        for principal, role, project in self._grants:
            persist.load_policy_line(f"g, {subject(principal)}, {role}, {project}", model)


class Authorizer:
    """Thread-safe casbin enforcement with lazy reloads."""

    def __init__(self, policies_dir: Path) -> None:
        self._model = policies_dir / "model.conf"
        self._policy = policies_dir / "policy.csv"
        for path in (self._model, self._policy):
            if not path.exists():
                raise FileNotFoundError(f"policy file {path} is missing")
        self._lock = threading.Lock()
        self._version: int | None = -2
        self._enforcer: casbin.Enforcer | None = None

    def _current_version(self, session: Session) -> int | None:
        return session.execute(
            select(func.max(LedgerEntryRow.seq)).where(LedgerEntryRow.action.in_(ROLE_ACTIONS))
        ).scalar_one_or_none()

    def _enforcer_for(self, session: Session) -> casbin.Enforcer:
        version = self._current_version(session)
        with self._lock:
            if self._enforcer is None or version != self._version:
                grants = [
                    (g.principal_id, g.role, g.project)
                    for g in session.execute(select(RoleGrantRow)).scalars()
                ]
                self._enforcer = casbin.Enforcer(
                    str(self._model), _GrantsAdapter(self._policy, grants)
                )
                self._version = version
            return self._enforcer

    def allowed(
        self,
        session: Session,
        principal: str,
        project: str,
        obj: str,
        act: str,
        *,
        any_project: bool = False,
    ) -> bool:
        """May ``principal`` do ``act`` on ``obj`` in ``project``?

        ``project="*"`` needs a grant that applies to every project. ``any_project`` asks about
        a shared resource (reading the ledger): a grant in any one project that allows it is
        enough.
        """
        enforcer = self._enforcer_for(session)
        with self._lock:
            sub = subject(principal)
            if not any_project:
                return bool(enforcer.enforce(sub, project, obj, act))
            domains = {
                rule[2] for rule in enforcer.get_filtered_grouping_policy(0, sub) if len(rule) >= 3
            }
            return any(enforcer.enforce(sub, dom, obj, act) for dom in domains | {"*"})
