"""Registry of projection functions: how each ledger action updates the projection tables.

Domain packages register a function per action. The append transaction calls it with the new
entry in the same database transaction, and a replay (``verify --database``) calls the same
functions on a scratch database, so projections are by construction a function of the ledger.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.orm import Session

from controlplane.ledger.entry import Entry

Projection = Callable[[Session, Entry], None]

_PROJECTIONS: dict[str, Projection] = {}


def projects(action: str) -> Callable[[Projection], Projection]:
    """Decorator: ``fn`` projects entries whose action is ``action``."""

    def register(fn: Projection) -> Projection:
        if action in _PROJECTIONS and _PROJECTIONS[action] is not fn:
            raise RuntimeError(f"two projections registered for {action}")
        _PROJECTIONS[action] = fn
        return fn

    return register


def apply(session: Session, entry: Entry) -> None:
    """Run the projection of ``entry`` (actions without one only live in the ledger)."""
    fn = _PROJECTIONS.get(entry.action)
    if fn is not None:
        fn(session, entry)
