"""Right to erasure of an annotator's identity.

The ledger never holds an annotator in clear: datasets carry keyed pseudonyms
(:func:`controlplane.registry.datasets.pseudonym`), and the mapping pseudonym -> person lives
only in ``annotator_pseudonyms``, outside the ledger. Erasing a person deletes their mapping
rows in one project and appends ``annotator.erased`` in the same transaction. That entry names
no one (no identity, no pseudonym, no free text): it records who erased, in which project, how
many mappings went, and on what basis. Nothing in the ledger changes, so the chain, the Merkle
tree and the projection replay all verify as before.

What stays: the pseudonyms themselves, inside dataset statistics in the ledger, which can no
longer be linked to the person through the control plane. An operator holding the pseudonym
secret who already knows the person's identifier could recompute the pseudonym; rotating the
secret for new data limits that (documented in README). Registering new data that names the
same person records a new mapping: that is new data, not a resurrection of the erased one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select

from controlplane import names
from controlplane.authz.service import Principal
from controlplane.errors import InvalidInput
from controlplane.registry.datasets import pseudonym as make_pseudonym
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import AnnotatorPseudonymRow

ERASURE_BASIS = "right_to_erasure"


class AnnotatorErasure:
    def __init__(self, store: LedgerStore, pseudonym_key: bytes) -> None:
        self.store = store
        self._key = pseudonym_key

    def erase(
        self,
        caller: Principal,
        project: str,
        *,
        annotator: str | None = None,
        pseudonym: str | None = None,
    ) -> dict[str, Any]:
        """Delete the mapping of one person (by identifier or by pseudonym) in ``project``.

        An erasure that finds nothing is still recorded (with ``mappings_erased: 0``): the
        request was handled, and a retry is harmless. The caller's duty is checked by the API
        (``annotators``/``erase``: roles ``data_owner`` and ``admin``).
        """
        names.project(project)
        if (annotator is None) == (pseudonym is None):
            raise InvalidInput("name the person by exactly one of annotator or pseudonym")
        value = annotator if annotator is not None else pseudonym
        if not isinstance(value, str) or not value.strip() or len(value) > 1000:
            raise InvalidInput("the annotator or pseudonym must be a non-empty string")
        aliases = {pseudonym} if pseudonym is not None else set()
        if annotator is not None:
            aliases.add(make_pseudonym(self._key, project, annotator))
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            match = AnnotatorPseudonymRow.pseudonym.in_(sorted(aliases))
            if annotator is not None:
                match = or_(match, AnnotatorPseudonymRow.annotator == annotator)
            where = (AnnotatorPseudonymRow.project == project, match)
            found = list(session.execute(select(AnnotatorPseudonymRow.pseudonym).where(*where)))
            session.execute(delete(AnnotatorPseudonymRow).where(*where))
            entry = tx.append(
                actor=caller.id,
                action="annotator.erased",
                subject={"project": project, "kind": "annotator_mapping"},
                payload={"mappings_erased": len(found), "basis": ERASURE_BASIS},
            )
        return {"project": project, "mappings_erased": len(found), "seq": entry.seq}


__all__ = ["ERASURE_BASIS", "AnnotatorErasure"]
