"""Offline re-verification of every stored sign-off, from ledger entries alone.

Fed the entries in order (by ``controlplane verify`` against a server or a bundle), it learns
each principal's keys from ``signing_key.registered`` / ``signing_key.revoked`` entries (in a
:class:`~controlplane.governance.keyring.KeyRing`, shared with the contract auditor) and
checks every ``promotion.signed_off`` envelope: a valid signature by a key the signer had
registered before signing and had not revoked, over a statement that names this request, this
artifact version and digest, the stage the request asked for (both as its
``promotion.requested`` entry recorded them), and the decision, comment and time the sign-off
entry records. No server and no database are trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.crypto.dsse import EnvelopeError, verify_envelope
from controlplane.governance import statements
from controlplane.governance.keyring import InvalidKeyEntry, KeyRing
from controlplane.ledger.verify import VerificationReport

_ABSENT = object()  # a statement field that is missing never equals a recorded value
_SUBJECT = ("project", "kind", "name", "version")


class SignoffAuditor:
    def __init__(self) -> None:
        self._ring = KeyRing()
        # request id (the seq of its promotion.requested entry) -> what was asked for
        self._requests: dict[int, dict[str, Any]] = {}
        self.checked = 0

    def __call__(self, entry: Mapping[str, Any], report: VerificationReport) -> None:
        action = entry.get("action")
        payload = entry.get("payload")
        subject = entry.get("subject")
        if not isinstance(payload, dict) or not isinstance(subject, dict):
            return
        try:
            self._ring.feed(entry)
        except InvalidKeyEntry as exc:
            report.fail(str(exc), entry.get("seq"))
            return
        if action == "promotion.requested" and isinstance(entry.get("seq"), int):
            self._requests[entry["seq"]] = {
                "subject": {k: subject.get(k) for k in _SUBJECT},
                "digest": payload.get("digest"),
                "target_stage": payload.get("target_stage"),
            }
        elif action == "promotion.signed_off":
            self._check(entry, subject, payload, report)

    def _check(
        self,
        entry: Mapping[str, Any],
        subject: dict[str, Any],
        payload: dict[str, Any],
        report: VerificationReport,
    ) -> None:
        seq = entry.get("seq")
        signer = str(entry.get("actor"))
        try:
            opened = verify_envelope(
                payload.get("envelope"), self._ring.usable_keys(signer), statements.PAYLOAD_TYPE
            )
            statement = statements.parse(opened.payload)
        except (EnvelopeError, ValueError) as exc:
            report.fail(f"sign-off by {signer} does not verify: {exc}", seq)
            return
        request_id = payload.get("request_id")
        known = isinstance(request_id, int) and not isinstance(request_id, bool)
        requested = self._requests.get(request_id) if known else None
        if requested is None:
            report.fail(
                f"sign-off by {signer} names request {request_id!r}, which no earlier "
                "promotion.requested entry opened",
                seq,
            )
            return
        asked = requested["subject"]
        expected = {
            "signer": signer,
            "request_id": request_id,
            "decision": payload.get("decision"),
            "comment": payload.get("comment"),
            "signed_at": payload.get("signed_at"),
            "project": asked["project"],
            "target_stage": requested["target_stage"],
        }
        signed = {"comment": "", **statement}  # the server records a missing comment as ""
        wrong = [k for k, v in expected.items() if signed.get(k, _ABSENT) != v]
        artifact = {k: asked[k] for k in ("kind", "name", "version")}
        artifact["digest"] = requested["digest"]
        wrong += [
            f"artifact.{k}"
            for k, v in artifact.items()
            if statement.get("artifact", {}).get(k, _ABSENT) != v
        ]
        # the sign-off entry itself must be about the request's artifact version too
        wrong += [f"subject.{k}" for k in _SUBJECT if subject.get(k) != asked[k]]
        if opened.key_id != payload.get("key_id"):
            wrong.append("key_id")
        if wrong:
            report.fail(
                f"sign-off by {signer} is signed over a different statement: "
                + ", ".join(wrong)
                + f" ({json.dumps(statement, sort_keys=True)[:200]})",
                seq,
            )
            return
        self.checked += 1
