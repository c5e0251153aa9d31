"""Offline re-verification of every registered data contract, from ledger entries alone.

Fed the entries in order (by ``controlplane verify`` against a server or a bundle), it learns
each principal's sign-off keys (``signing_key.*``, in the
:class:`~controlplane.governance.keyring.KeyRing` the sign-off auditor uses too) and the digest
and stage of every dataset and rubric version (``artifact.version_registered``,
``stage.changed``). At each ``contract.registered`` it re-checks the stored envelope exactly as
the server did at that moment: a valid signature by a key the owner had registered and not
revoked, the owner being the actor, every subject an approved version with that digest, not
expired, and the entry's summary fields (id, owner, key, purpose, expiry, digest, subjects)
matching the signed statement. No server and no database are trusted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from controlplane.contracts import statement as st
from controlplane.contracts.signatures import SignatureProblem, check_signature, open_envelope
from controlplane.errors import ControlPlaneError
from controlplane.governance.keyring import InvalidKeyEntry, KeyRing
from controlplane.ledger.verify import VerificationReport

_DATA_KINDS = ("dataset", "rubric")


class ContractAuditor:
    def __init__(self) -> None:
        self._ring = KeyRing()
        self._versions: dict[tuple[str, str, str, int], list[str]] = {}  # -> [digest, stage]
        self._contracts: set[str] = set()
        self.checked = 0

    def __call__(self, entry: Mapping[str, Any], report: VerificationReport) -> None:
        action = entry.get("action")
        payload = entry.get("payload")
        subject = entry.get("subject")
        if not isinstance(payload, dict) or not isinstance(subject, dict):
            return
        with contextlib.suppress(InvalidKeyEntry):  # the sign-off auditor reports those
            self._ring.feed(entry)
        try:
            if action == "artifact.version_registered" and subject.get("kind") in _DATA_KINDS:
                self._versions[_version_key(subject)] = [str(payload["digest"]), "registered"]
            elif action == "stage.changed" and subject.get("kind") in _DATA_KINDS:
                known = self._versions.get(_version_key(subject))
                if known is not None:
                    known[1] = str(payload.get("to"))
            elif action == "contract.registered":
                self._check(entry, subject, payload, report)
            elif action == "contract.revoked" and payload.get("contract_id") not in self._contracts:
                report.fail("a contract that was never registered is revoked", entry.get("seq"))
        except (KeyError, TypeError, ValueError):
            if action in ("contract.registered", "contract.revoked"):
                report.fail(f"{action} entry is malformed", entry.get("seq"))

    def _check(
        self,
        entry: Mapping[str, Any],
        subject: dict[str, Any],
        payload: dict[str, Any],
        report: VerificationReport,
    ) -> None:
        seq = entry.get("seq")
        who = f"contract {payload.get('contract_id')}"
        try:
            opened = open_envelope(payload.get("envelope"))
        except ControlPlaneError as exc:
            report.fail(f"{who} does not verify: {exc.detail}", seq)
            return
        statement = opened.statement
        owner_keys = self._ring.keys_of(statement.owner)
        try:
            check_signature(
                opened,
                {kid: key.public_key for kid, key in owner_keys.items()},
                {
                    kid: f"at seq {key.revoked.seq}"
                    for kid, key in owner_keys.items()
                    if key.revoked is not None
                },
            )
        except SignatureProblem as exc:
            report.fail(f"{who} does not verify: {exc.reason}", seq)
            return
        expected = {
            "contract_id": (payload.get("contract_id"), statement.id),
            "subject.name": (subject.get("name"), statement.id),
            "subject.project": (subject.get("project"), statement.project),
            "actor": (entry.get("actor"), statement.owner),
            "owner": (payload.get("owner"), statement.owner),
            "key_id": (payload.get("key_id"), opened.key_id),
            "purpose": (payload.get("purpose"), statement.purpose),
            "expires": (payload.get("expires"), statement.predicate["expires"]),
            "envelope_digest": (
                payload.get("envelope_digest"),
                st.envelope_digest(payload["envelope"]),
            ),
            "subjects": (
                payload.get("subjects"),
                [
                    {"name": s.full_name, "kind": s.kind, "digest": s.digest}
                    for s in statement.subjects
                ],
            ),
        }
        wrong = [name for name, (stored, signed) in expected.items() if stored != signed]
        if wrong:
            report.fail(f"{who}: the entry does not match its signed statement: {wrong}", seq)
            return
        for covered in statement.subjects:
            known = self._versions.get(
                (covered.project, covered.kind, covered.name, covered.version)
            )
            if known is None or known[0] != covered.digest or known[1] != "approved":
                state = "unknown" if known is None else f"{known[1]}, digest {known[0]}"
                report.fail(
                    f"{who} covers {covered.ref} with digest {covered.digest}, but at that "
                    f"point it was {state}",
                    seq,
                )
                return
        when = entry.get("timestamp")
        if isinstance(when, str):
            registered_at = datetime.fromisoformat(when.replace("Z", "+00:00"))
            if statement.expires <= registered_at:
                report.fail(f"{who} was registered after it expired", seq)
                return
        self._contracts.add(statement.id)
        self.checked += 1


def _version_key(subject: Mapping[str, Any]) -> tuple[str, str, str, int]:
    return (
        str(subject["project"]),
        str(subject["kind"]),
        str(subject["name"]),
        int(subject["version"]),
    )
