"""Promotion governance: requests, signed sign-offs, quorum, gates, rollback and retirement.

Every decision runs under the ledger lock in one transaction, so concurrent sign-offs can never
promote twice, and the promotion happens in the same transaction as the last approval. Every
:class:`Refused` (a request, sign-off, withdrawal, rollback, retirement or key revocation
refused by policy) is itself appended as a ``*.refused`` entry, in a transaction of its own
after the deciding one rolled back, before the caller hears about it. Nothing is raised inside
a transaction that also appended something the caller is told about (an expiry): that would
roll the entry back.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane import clock, names
from controlplane.authz.service import SYSTEM_ACTOR, Principal
from controlplane.crypto.dsse import EnvelopeError, OpenedEnvelope, parse_envelope, verify_envelope
from controlplane.crypto.keys import key_id, public_key_from_b64
from controlplane.errors import Conflict, ControlPlaneError, InvalidInput, NotFound
from controlplane.governance import projections as _projections  # noqa: F401
from controlplane.governance import statements
from controlplane.governance.rules import GATED_LINEAGE_KINDS, Rule, RulesError, RuleSet
from controlplane.ledger.canonical import canonical_json
from controlplane.ledger.entry import format_timestamp
from controlplane.registry.digests import digest_bytes
from controlplane.registry.projections import find_version
from controlplane.registry.refs import MODEL_KINDS, VersionRef
from controlplane.registry.service import RegistryService
from controlplane.store.ledger_store import LedgerStore, Transaction
from controlplane.store.models import (
    ArtifactVersionRow,
    LedgerEntryRow,
    LineageEdgeRow,
    PromotionRequestRow,
    RoleGrantRow,
    SigningKeyRow,
    SignoffRow,
)

RULES_ACTION = "promotion_rules.installed"
MAX_CLOCK_SKEW = timedelta(minutes=10)
MAX_COMMENT = 10_000  # characters; longer comments are refused, never cut (they are signed)
MAX_SIGNED_AT = 40  # characters, the width of signoffs.signed_at
RETIRED_REASON = "retired: "  # how a deliberate retirement's stage change begins its reason
ROLLBACK_REASON = "rollback: "  # how a rollback's stage changes begin their reason


class Refused(ControlPlaneError):
    """Refused by the promotion policy (recorded in the ledger)."""

    status = 403
    title = "Refused by policy"
    code = "refused"


@dataclass
class _Refusal:
    action: str
    subject: dict[str, Any]
    payload: dict[str, Any]
    error: ControlPlaneError


def _subject(row: ArtifactVersionRow | PromotionRequestRow) -> dict[str, Any]:
    return {"project": row.project, "kind": row.kind, "name": row.name, "version": row.version}


@lru_cache(maxsize=64)
def _rules_from_json(text: str) -> RuleSet:
    return RuleSet.from_mapping(json.loads(text))


class GovernanceService:
    def __init__(self, store: LedgerStore, registry: RegistryService) -> None:
        self.store = store
        self.registry = registry

    # -- rules ---------------------------------------------------------------------------------

    def install_rules(self, tx: Transaction, raw: dict[str, Any]) -> None:
        """Ledger the rules when they differ from the ones in force (called at init)."""
        RuleSet.from_mapping(raw)  # fail closed before recording anything
        digest = digest_bytes(canonical_json(raw))
        current = self._rules_entry(tx.session)
        if current is None or current[1].get("digest") != digest:
            tx.append(
                actor=SYSTEM_ACTOR,
                action=RULES_ACTION,
                subject={"kind": "policy_set", "name": "promotion"},
                payload={"digest": digest, "rules": raw},
            )

    def _rules_entry(self, session: Session, seq: int | None = None) -> tuple[int, dict] | None:
        query = select(LedgerEntryRow.seq, LedgerEntryRow.payload).where(
            LedgerEntryRow.action == RULES_ACTION
        )
        query = (
            query.where(LedgerEntryRow.seq == seq)
            if seq is not None
            else query.order_by(LedgerEntryRow.seq.desc()).limit(1)
        )
        row = session.execute(query).first()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    def rules(self, session: Session, seq: int | None = None) -> tuple[int, RuleSet]:
        """The rules in force now, or the version recorded at ``seq``."""
        found = self._rules_entry(session, seq)
        if found is None:
            raise NotFound("no promotion rules are installed")
        try:
            return found[0], _rules_from_json(json.dumps(found[1]["rules"], sort_keys=True))
        except RulesError as exc:  # recorded by an older, laxer parser: act on none of it
            raise Conflict(
                f"the promotion rules recorded at seq {found[0]} are not valid: {exc}"
            ) from None

    # -- keys ----------------------------------------------------------------------------------

    def register_key(self, caller: Principal, public_key_b64: str, name: str) -> dict[str, Any]:
        try:
            public = public_key_from_b64(public_key_b64)
        except (ValueError, TypeError):
            raise InvalidInput("public_key must be a base64 raw Ed25519 public key") from None
        kid = key_id(public)
        with self.store.transaction() as tx:
            tx.lock()
            if tx.session.get(SigningKeyRow, kid) is not None:
                raise Conflict(f"key {kid[:16]} is already registered")
            tx.append(
                actor=caller.id,
                action="signing_key.registered",
                subject={"kind": "principal", "name": caller.id},
                payload={"key_id": kid, "public_key": public_key_b64, "name": name[:200]},
            )
        with self.store.db.read() as session:
            return self.key(session, kid)

    def revoke_key(self, caller: Principal, kid: str, reason: str, *, is_admin: bool) -> dict:
        refusal: _Refusal | None = None
        with self.store.transaction() as tx:
            tx.lock()
            row = tx.session.get(SigningKeyRow, kid)
            if row is None:
                raise NotFound(f"key {kid[:16]} is not registered")
            if row.principal_id != caller.id and not is_admin:
                error = Refused("only the key's owner or an admin may revoke it")
                refusal = _Refusal(
                    "key_revocation.refused",
                    {"kind": "principal", "name": row.principal_id},
                    {"key_id": kid, "reason": error.detail},
                    error,
                )
            elif row.revoked_seq is None:
                tx.append(
                    actor=caller.id,
                    action="signing_key.revoked",
                    subject={"kind": "principal", "name": row.principal_id},
                    payload={"key_id": kid, "reason": reason[:2000]},
                )
        if refusal is not None:
            self._record_refusal(caller, refusal)
        with self.store.db.read() as session:
            return self.key(session, kid)

    def key(self, session: Session, kid: str) -> dict[str, Any]:
        row = session.get(SigningKeyRow, kid)
        if row is None:
            raise NotFound(f"key {kid[:16]} is not registered")
        return _key_dict(row)

    def keys(self, session: Session, principal_id: str | None = None) -> list[dict[str, Any]]:
        query = select(SigningKeyRow).order_by(SigningKeyRow.registered_seq)
        if principal_id:
            query = query.where(SigningKeyRow.principal_id == principal_id)
        return [_key_dict(r) for r in session.execute(query).scalars()]

    # -- requests ------------------------------------------------------------------------------

    def open_request(
        self,
        caller: Principal,
        project: str,
        ref: VersionRef,
        target: str,
        justification: str,
        traffic_share: float | None = None,
    ) -> dict[str, Any]:
        names.project(project)
        if not justification.strip():
            raise InvalidInput("a justification is required")
        refusal: _Refusal | None = None
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            version = find_version(session, project, ref.kind, ref.name, ref.version)
            if version is None:
                raise NotFound(f"{ref} does not exist in project {project!r}")
            rules_seq, rules = self.rules(session)
            try:
                rule = self._request_rule(session, rules, version, target, traffic_share)
            except Refused as exc:
                refusal = _Refusal(
                    "promotion.refused",
                    _subject(version),
                    {"target_stage": target, "reason": exc.detail, "requester": caller.id},
                    exc,
                )
            else:
                duplicate = session.execute(
                    select(PromotionRequestRow.id).where(
                        PromotionRequestRow.project == project,
                        PromotionRequestRow.kind == ref.kind,
                        PromotionRequestRow.name == ref.name,
                        PromotionRequestRow.version == ref.version,
                        PromotionRequestRow.target_stage == target,
                        PromotionRequestRow.state == "open",
                    )
                ).first()
                if duplicate is not None:
                    raise Conflict(f"request {duplicate[0]} for {ref} -> {target} is already open")
                expires = clock.now() + timedelta(hours=rule.expires_after_hours)
                entry = tx.append(
                    actor=caller.id,
                    action="promotion.requested",
                    subject=_subject(version),
                    payload={
                        "target_stage": target,
                        "from_stage": version.stage,
                        "justification": justification[:10_000],
                        "traffic_share": traffic_share,
                        "rules_seq": rules_seq,
                        "digest": version.digest,
                        "expires_at": format_timestamp(expires),
                    },
                )
        if refusal is not None:
            self._record_refusal(caller, refusal)
        with self.store.db.read() as session:
            return self.request(session, entry.seq)

    def _request_rule(
        self,
        session: Session,
        rules: RuleSet,
        version: ArtifactVersionRow,
        target: str,
        traffic_share: float | None,
    ) -> Rule:
        stages = rules.stages_for(version.kind)
        if target not in stages:
            raise InvalidInput(
                f"{version.kind} has no stage {target!r}; stages are {', '.join(stages)}"
            )
        rule = rules.rule_for(version.kind, target)
        if rule is None:
            raise Refused(f"no rule allows promoting a {version.kind} to {target}")
        if version.stage not in rule.from_stages:
            raise Refused(
                f"{_ref(version)} is in stage {version.stage}; promotion to {target} starts "
                f"from {' or '.join(rule.from_stages)}"
            )
        if rule.traffic_share == "required" and traffic_share is None:
            raise InvalidInput(f"a promotion to {target} records its traffic share")
        if rule.traffic_share == "forbidden" and traffic_share is not None:
            raise InvalidInput(f"a promotion to {target} takes no traffic share")
        if traffic_share is not None and not 0 < traffic_share <= 1:
            raise InvalidInput("traffic_share must be in (0, 1]")
        missing = self._missing_evidence(session, version, rule)
        if missing:
            raise Refused("missing evidence: " + "; ".join(missing))
        blocked = self._lineage_blockers(session, rules, version, target)
        if blocked:
            raise Refused(
                f"lineage not approved for {target}: "
                + ", ".join(f"{ref} is {stage}" for ref, stage in blocked)
            )
        return rule

    def _missing_evidence(
        self, session: Session, version: ArtifactVersionRow, rule: Rule
    ) -> list[str]:
        if not rule.evidence:
            return []
        evaluations = session.execute(
            select(ArtifactVersionRow)
            .join(LineageEdgeRow, LineageEdgeRow.child_id == ArtifactVersionRow.id)
            .where(
                LineageEdgeRow.parent_id == version.id,
                LineageEdgeRow.relation == "evaluated_on",
                ArtifactVersionRow.kind == "evaluation",
            )
        ).scalars()
        found = [json.loads(e.metadata_json) for e in evaluations]
        missing = []
        for evidence in rule.evidence:
            if not any(_satisfies(meta, evidence) for meta in found):
                missing.append(f"needs {evidence.describe()} linked evaluated_on {_ref(version)}")
        return missing

    def _lineage_blockers(
        self, session: Session, rules: RuleSet, version: ArtifactVersionRow, target: str
    ) -> list[tuple[str, str]]:
        gate = rules.lineage_gate_after
        stages = rules.stages_for(version.kind)
        if version.kind not in MODEL_KINDS or gate is None:
            return []
        # A gate stage this kind does not have gates every move (the parser refuses such
        # rules; this is the second line, so that a gap there can never switch the gate off).
        if gate in stages and stages.index(target) <= stages.index(gate):
            return []
        ancestors = self.registry._walk(session, version.id, up=True)
        if not ancestors:
            return []
        rows = session.execute(
            select(ArtifactVersionRow).where(
                ArtifactVersionRow.id.in_(list(ancestors)),
                ArtifactVersionRow.kind.in_(GATED_LINEAGE_KINDS),
            )
        ).scalars()
        return sorted((_ref(r), r.stage) for r in rows if r.stage != rules.lineage_required_stage)

    def withdraw(self, caller: Principal, request_id: int, reason: str) -> dict[str, Any]:
        """Close an open request (its requester only).

        A request found past its expiry is closed as expired instead, and that closing is
        committed before the caller hears the Conflict: raising inside the transaction would
        roll the ``promotion.expired`` entry back and leave the request open.
        """
        refusal: _Refusal | None = None
        expired = False
        with self.store.transaction() as tx:
            tx.lock()
            request = tx.session.get(PromotionRequestRow, request_id)
            if request is None:
                raise NotFound(f"request {request_id} does not exist")
            if self._expire_if_due(tx, request):
                expired = True
            elif request.state != "open":
                raise Conflict(f"request {request_id} is {request.state}")
            elif request.requester != caller.id:
                error = Refused("only the requester may withdraw a request")
                refusal = _Refusal(
                    "withdrawal.refused",
                    _subject(request),
                    {"request_id": request_id, "reason": error.detail},
                    error,
                )
            else:
                tx.append(
                    actor=caller.id,
                    action="promotion.withdrawn",
                    subject=_subject(request),
                    payload={"request_id": request_id, "reason": reason[:2000] or "withdrawn"},
                )
        if expired:
            raise Conflict(f"request {request_id} is expired: it passed its expiry without quorum")
        if refusal is not None:
            self._record_refusal(caller, refusal)
        with self.store.db.read() as session:
            return self.request(session, request_id)

    def _expire_if_due(self, tx: Transaction, request: PromotionRequestRow) -> bool:
        if request.state == "open" and request.expires_at <= clock.now():
            tx.append(
                actor=SYSTEM_ACTOR,
                action="promotion.expired",
                subject=_subject(request),
                payload={"request_id": request.id, "reason": "expired without quorum"},
            )
            tx.session.refresh(request)
            return True
        return False

    def expire_due(self) -> int:
        """Close every open request past its expiry (requests close themselves)."""
        with self.store.db.read() as session:
            due = list(
                session.execute(
                    select(PromotionRequestRow.id).where(
                        PromotionRequestRow.state == "open",
                        PromotionRequestRow.expires_at <= clock.now(),
                    )
                ).scalars()
            )
        if not due:
            return 0
        closed = 0
        with self.store.transaction() as tx:
            tx.lock()
            for request_id in due:
                request = tx.session.get(PromotionRequestRow, request_id)
                if request is not None and self._expire_if_due(tx, request):
                    closed += 1
        return closed

    # -- sign-offs -----------------------------------------------------------------------------

    def sign_off(
        self, caller: Principal, request_id: int, envelope: dict[str, Any]
    ) -> dict[str, Any]:
        """Count a signed approval or rejection; promote in the same transaction at quorum."""
        refusal: _Refusal | None = None
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            request = session.get(PromotionRequestRow, request_id)
            if request is None:
                raise NotFound(f"request {request_id} does not exist")
            if self._expire_if_due(tx, request):
                refusal = _Refusal(
                    "signoff.refused",
                    _subject(request),
                    {"request_id": request_id, "signer": caller.id, "reason": "expired"},
                    Conflict(f"request {request_id} has expired"),
                )
            elif request.state != "open":
                raise Conflict(f"request {request_id} is {request.state}")
            else:
                try:
                    self._count_signoff(tx, caller, request, envelope)
                except Refused as exc:
                    refusal = _Refusal(
                        "signoff.refused",
                        _subject(request),
                        {"request_id": request_id, "signer": caller.id, "reason": exc.detail},
                        exc,
                    )
        if refusal is not None:
            self._record_refusal(caller, refusal)
        with self.store.db.read() as session:
            return self.request(session, request_id)

    def _count_signoff(
        self,
        tx: Transaction,
        caller: Principal,
        request: PromotionRequestRow,
        envelope: dict[str, Any],
    ) -> None:
        session = tx.session
        _, rules = self.rules(session, request.rules_seq)
        rule = rules.rule_for(request.kind, request.target_stage)
        if rule is None:
            raise Refused("the rules this request was opened under no longer cover it")
        roles = self._roles(session, caller.id, request.project)
        if not roles & set(rules.signers):
            raise Refused(
                f"{caller.id} may not sign off: it needs one of the roles "
                f"{', '.join(rules.signers)} in project {request.project}"
            )
        keys = {
            k.key_id: public_key_from_b64(k.public_key)
            for k in session.execute(
                select(SigningKeyRow).where(SigningKeyRow.principal_id == caller.id)
            ).scalars()
        }
        try:
            opened = verify_envelope(envelope, keys, statements.PAYLOAD_TYPE)
            statement = statements.parse(opened.payload)
        except (EnvelopeError, ValueError) as exc:
            raise Refused(f"not a valid sign-off by {caller.id}: {exc}") from None
        key_row = session.get(SigningKeyRow, opened.key_id)
        assert key_row is not None
        if key_row.revoked_seq is not None:
            revoked = format_timestamp(key_row.revoked_at) if key_row.revoked_at else "?"
            raise Refused(f"key {opened.key_id[:16]} was revoked at {revoked}")
        version = find_version(
            session, request.project, request.kind, request.name, request.version
        )
        assert version is not None
        expected = {
            "request_id": request.id,
            "project": request.project,
            "artifact": {
                "kind": request.kind,
                "name": request.name,
                "version": request.version,
                "digest": version.digest,
            },
            "target_stage": request.target_stage,
            "signer": caller.id,
        }
        wrong = [k for k, v in expected.items() if statement.get(k) != v]
        if wrong:
            raise Refused(f"the signed statement does not match this request: {', '.join(wrong)}")
        try:
            signed_at = statements.signed_time(statement.get("signed_at"), MAX_SIGNED_AT)
        except ValueError as exc:
            raise Refused(f"the statement has no valid signed_at time: {exc}") from None
        if abs(clock.now() - signed_at) > MAX_CLOCK_SKEW:
            raise Refused("the statement was signed too long ago or in the future (replay?)")
        comment = statement.get("comment", "")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            # recorded exactly as signed, so the audit can hold one against the other
            raise Refused(f"the statement's comment must be text of at most {MAX_COMMENT} chars")
        if session.get(SignoffRow, (request.id, caller.id)) is not None:
            raise Refused(f"{caller.id} has already signed off request {request.id}")
        decision = statement["decision"]
        if decision == "approve":
            if caller.id == request.requester and not rule.requester_may_approve:
                raise Refused("the requester may not approve their own request")
            if caller.id == version.created_by and not rule.creator_may_approve:
                raise Refused("the version's creator may not approve its promotion")
        subject = _subject(request)
        tx.append(
            actor=caller.id,
            action="promotion.signed_off",
            subject=subject,
            payload={
                "request_id": request.id,
                "decision": decision,
                "comment": comment,
                "key_id": opened.key_id,
                "signed_at": statement["signed_at"],
                "roles": sorted(roles),
                "envelope": _recorded_envelope(envelope, opened),
            },
        )
        if decision == "reject":
            tx.append(
                actor=caller.id,
                action="promotion.rejected",
                subject=subject,
                payload={"request_id": request.id, "reason": f"rejected by {caller.id}"},
            )
            return
        if self._quorum(session, request, rule):
            self._promote(tx, rules, request, version)

    def _roles(self, session: Session, principal_id: str, project: str) -> set[str]:
        return set(
            session.execute(
                select(RoleGrantRow.role).where(
                    RoleGrantRow.principal_id == principal_id,
                    RoleGrantRow.project.in_((project, "*")),
                )
            ).scalars()
        )

    def _quorum_state(
        self, session: Session, request: PromotionRequestRow, rule: Rule
    ) -> dict[str, Any]:
        """How far the approvals go. A required role counts only if its signer held it when
        signing (as recorded in the ``promotion.signed_off`` entry) and still holds it: a role
        granted after the signature was not what the signer signed as."""
        approvals = list(
            session.execute(
                select(SignoffRow).where(
                    SignoffRow.request_id == request.id, SignoffRow.decision == "approve"
                )
            ).scalars()
        )
        signers = sorted({s.signer for s in approvals})
        when_signed = self._signing_roles(session, [s.seq for s in approvals])
        held: set[str] = set()
        for signoff in approvals:
            now = self._roles(session, signoff.signer, request.project)
            held |= when_signed.get(signoff.seq, set()) & now
        missing_roles = [r for r in rule.required_roles if r not in held]
        return {
            "approvals": len(signers),
            "required": rule.approvals,
            "signers": signers,
            "missing_roles": missing_roles,
            "met": len(signers) >= rule.approvals and not missing_roles,
        }

    def _signing_roles(self, session: Session, seqs: list[int]) -> dict[int, set[str]]:
        """The roles recorded in each ``promotion.signed_off`` entry at ``seqs``."""
        if not seqs:
            return {}
        rows = session.execute(
            select(LedgerEntryRow.seq, LedgerEntryRow.payload).where(LedgerEntryRow.seq.in_(seqs))
        ).all()
        return {int(seq): set(json.loads(payload).get("roles") or ()) for seq, payload in rows}

    def _quorum(self, session: Session, request: PromotionRequestRow, rule: Rule) -> bool:
        return bool(self._quorum_state(session, request, rule)["met"])

    def _promote(
        self,
        tx: Transaction,
        rules: RuleSet,
        request: PromotionRequestRow,
        version: ArtifactVersionRow,
    ) -> None:
        session = tx.session
        blocked = self._lineage_blockers(session, rules, version, request.target_stage)
        if version.stage != request.from_stage:
            blocked = [(_ref(version), f"now {version.stage}, not {request.from_stage}")]
        if blocked:
            tx.append(
                actor=SYSTEM_ACTOR,
                action="promotion.refused",
                subject=_subject(request),
                payload={
                    "request_id": request.id,
                    "target_stage": request.target_stage,
                    "reason": "quorum met but gates fail: "
                    + ", ".join(f"{r} is {s}" for r, s in blocked),
                },
            )
            return
        tx.append(
            actor=SYSTEM_ACTOR,
            action="promotion.approved",
            subject=_subject(request),
            payload={"request_id": request.id, "reason": "quorum met"},
        )
        extra = {"request_id": request.id}
        if request.traffic_share is not None:
            extra["traffic_share"] = request.traffic_share
        self._move(tx, rules, version, request.target_stage, "promoted", extra)

    def _move(
        self,
        tx: Transaction,
        rules: RuleSet,
        version: ArtifactVersionRow,
        target: str,
        reason: str,
        extra: dict[str, Any],
    ) -> None:
        """Put ``version`` in ``target``, moving any exclusive holder out first."""
        fallback = rules.exclusive.get(target)
        if fallback is not None and version.kind in MODEL_KINDS:
            holders = tx.session.execute(
                select(ArtifactVersionRow).where(
                    ArtifactVersionRow.project == version.project,
                    ArtifactVersionRow.kind == version.kind,
                    ArtifactVersionRow.name == version.name,
                    ArtifactVersionRow.stage == target,
                    ArtifactVersionRow.id != version.id,
                )
            ).scalars()
            for holder in list(holders):
                tx.append(
                    actor=SYSTEM_ACTOR,
                    action="stage.changed",
                    subject=_subject(holder),
                    payload={
                        "from": target,
                        "to": fallback,
                        "reason": f"superseded by version {version.version}",
                        **extra,
                    },
                )
        tx.append(
            actor=SYSTEM_ACTOR,
            action="stage.changed",
            subject=_subject(version),
            payload={"from": version.stage, "to": target, "reason": reason, **extra},
        )

    # -- emergencies ---------------------------------------------------------------------------

    def rollback(self, caller: Principal, project: str, kind: str, name: str, reason: str) -> dict:
        """Put the previous production version back (one person with a rollback role).

        A version someone retired on purpose (``retire``) is never brought back this way.
        """
        if not reason.strip():
            raise InvalidInput("a reason is required")
        subject = {"project": project, "kind": kind, "name": name}
        result: dict[str, Any] = {}
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            _, rules = self.rules(session)
            refusal = self._role_refusal(
                session,
                caller,
                project,
                rules.rollback_roles,
                "roll back",
                "rollback.refused",
                subject,
            )
            if refusal is None:
                result = self._roll_back(tx, caller, project, kind, name, reason)
        if refusal is not None:
            self._record_refusal(caller, refusal)
        return result

    def _roll_back(
        self, tx: Transaction, caller: Principal, project: str, kind: str, name: str, reason: str
    ) -> dict[str, Any]:
        session = tx.session
        current = session.execute(
            select(ArtifactVersionRow).where(
                ArtifactVersionRow.project == project,
                ArtifactVersionRow.kind == kind,
                ArtifactVersionRow.name == name,
                ArtifactVersionRow.stage == "production",
            )
        ).scalar_one_or_none()
        if current is None:
            raise Conflict(f"{kind}/{name} has no version in production")
        previous = self._previous_production(session, project, kind, name, current.version)
        if previous is None:
            raise Conflict(f"{kind}/{name} has no earlier production version to restore")
        back = find_version(session, project, kind, name, previous)
        assert back is not None
        tx.append(
            actor=caller.id,
            action="promotion.rolled_back",
            subject={"project": project, "kind": kind, "name": name},
            payload={"from_version": current.version, "to_version": previous, "reason": reason},
        )
        tx.append(
            actor=caller.id,
            action="stage.changed",
            subject=_subject(current),
            payload={
                "from": "production",
                "to": "retired",
                "reason": f"{ROLLBACK_REASON}{reason}",
            },
        )
        tx.append(
            actor=caller.id,
            action="stage.changed",
            subject=_subject(back),
            payload={
                "from": back.stage,
                "to": "production",
                "reason": f"{ROLLBACK_REASON}{reason}",
            },
        )
        return {
            "project": project,
            "kind": kind,
            "name": name,
            "from_version": current.version,
            "to_version": previous,
            "reason": reason,
        }

    def _previous_production(
        self, session: Session, project: str, kind: str, name: str, current: int
    ) -> int | None:
        """The last version before ``current`` to hold production. Conflict if it was retired
        on purpose since: a rollback must not undo that decision."""
        rows = session.execute(
            select(LedgerEntryRow.subject, LedgerEntryRow.payload)
            .where(
                LedgerEntryRow.action == "stage.changed",
                LedgerEntryRow.project == project,
                LedgerEntryRow.subject_kind == kind,
                LedgerEntryRow.subject_name == name,
            )
            .order_by(LedgerEntryRow.seq)
        ).all()
        holders: list[int] = []
        deliberately_retired: set[int] = set()
        for subject_text, payload_text in rows:
            version, payload = json.loads(subject_text)["version"], json.loads(payload_text)
            if payload.get("to") == "production":
                holders.append(version)
                deliberately_retired.discard(version)
            elif str(payload.get("reason", "")).startswith(RETIRED_REASON):
                deliberately_retired.add(version)
        earlier = [v for v in holders if v != current]
        if earlier and earlier[-1] in deliberately_retired:
            raise Conflict(
                f"{kind}/{name}@{earlier[-1]}, the previous production version, was retired on "
                "purpose: promote a version through a request instead"
            )
        return earlier[-1] if earlier else None

    def retire(self, caller: Principal, project: str, ref: VersionRef, reason: str) -> dict:
        if not reason.strip():
            raise InvalidInput("a reason is required")
        if ref.kind not in MODEL_KINDS:
            raise InvalidInput("datasets and rubrics are deprecated through a request")
        with self.store.transaction() as tx:
            tx.lock()
            session = tx.session
            _, rules = self.rules(session)
            refusal = self._role_refusal(
                session,
                caller,
                project,
                rules.retire_roles,
                "retire",
                "retirement.refused",
                {"project": project, "kind": ref.kind, "name": ref.name, "version": ref.version},
            )
            if refusal is None:
                version = find_version(session, project, ref.kind, ref.name, ref.version)
                if version is None:
                    raise NotFound(f"{ref} does not exist in project {project!r}")
                if version.stage == "retired":
                    raise Conflict(f"{ref} is already retired")
                tx.append(
                    actor=caller.id,
                    action="stage.changed",
                    subject=_subject(version),
                    payload={
                        "from": version.stage,
                        "to": "retired",
                        "reason": f"{RETIRED_REASON}{reason}",
                    },
                )
        if refusal is not None:
            self._record_refusal(caller, refusal)
        with self.store.db.read() as session:
            return self.registry.get_version(session, project, ref)

    def _role_refusal(
        self,
        session: Session,
        caller: Principal,
        project: str,
        roles: tuple[str, ...],
        what: str,
        action: str,
        subject: dict[str, Any],
    ) -> _Refusal | None:
        """The refusal to record when ``caller`` holds none of ``roles`` in ``project``."""
        if self._roles(session, caller.id, project) & set(roles):
            return None
        error = Refused(f"{caller.id} may not {what}: needs one of {', '.join(roles)}")
        return _Refusal(action, subject, {"reason": error.detail}, error)

    def _record_refusal(self, caller: Principal, refusal: _Refusal) -> None:
        with self.store.transaction() as tx:
            tx.append(
                actor=caller.id,
                action=refusal.action,
                subject=refusal.subject,
                payload=refusal.payload,
            )
        raise refusal.error

    # -- queries -------------------------------------------------------------------------------

    def request(self, session: Session, request_id: int) -> dict[str, Any]:
        row = session.get(PromotionRequestRow, request_id)
        if row is None:
            raise NotFound(f"request {request_id} does not exist")
        return self._request_dict(session, row)

    def _request_dict(self, session: Session, row: PromotionRequestRow) -> dict[str, Any]:
        version = find_version(session, row.project, row.kind, row.name, row.version)
        assert version is not None
        _, rules = self.rules(session, row.rules_seq)
        rule = rules.rule_for(row.kind, row.target_stage)
        signoffs = list(
            session.execute(
                select(SignoffRow).where(SignoffRow.request_id == row.id).order_by(SignoffRow.seq)
            ).scalars()
        )
        revoked = _revocations(session, {s.key_id for s in signoffs})
        out = {
            "id": row.id,
            "project": row.project,
            "kind": row.kind,
            "name": row.name,
            "version": row.version,
            "ref": f"{row.kind}/{row.name}@{row.version}",
            "digest": version.digest,
            "from_stage": row.from_stage,
            "target_stage": row.target_stage,
            "traffic_share": row.traffic_share,
            "justification": row.justification,
            "requester": row.requester,
            "creator": version.created_by,
            "rules_seq": row.rules_seq,
            "state": row.state,
            "opened_at": row.opened_at,
            "expires_at": row.expires_at,
            "closed_at": row.closed_at,
            "closed_reason": row.closed_reason,
            "signoffs": [
                {
                    "signer": s.signer,
                    "decision": s.decision,
                    "comment": s.comment,
                    "key_id": s.key_id,
                    "signed_at": s.signed_at,
                    "seq": s.seq,
                    "key_revoked_at": revoked.get(s.key_id),
                }
                for s in signoffs
            ],
        }
        if rule is not None:
            out["quorum"] = self._quorum_state(session, row, rule)
            out["evidence"] = [e.describe() for e in rule.evidence]
        return out

    def requests(
        self,
        session: Session,
        project: str,
        state: str | None = None,
        kind: str | None = None,
        name: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        query = select(PromotionRequestRow).where(PromotionRequestRow.project == project)
        if state:
            query = query.where(PromotionRequestRow.state == state)
        if kind:
            query = query.where(PromotionRequestRow.kind == kind)
        if name:
            query = query.where(PromotionRequestRow.name == name)
        rows = session.execute(query.order_by(PromotionRequestRow.id.desc()).limit(limit)).scalars()
        return [self._request_dict(session, r) for r in rows]

    def status(
        self, session: Session, project: str, kind: str, name: str, at: datetime | None = None
    ) -> dict[str, Any]:
        """Which version held each stage at ``at`` (default now), from the ledger alone."""
        moment = format_timestamp(at or clock.now())
        rows = session.execute(
            select(LedgerEntryRow)
            .where(
                LedgerEntryRow.project == project,
                LedgerEntryRow.subject_kind == kind,
                LedgerEntryRow.subject_name == name,
                LedgerEntryRow.timestamp <= moment,
            )
            .order_by(LedgerEntryRow.seq)
        ).scalars()
        stage_of: dict[int, tuple[str, int, dict[str, Any]]] = {}
        # (version, stage) -> the request that last moved the version into that stage, so a
        # version restored by a rollback still shows the sign-offs that first put it there.
        promoted_by: dict[tuple[int, str], int] = {}
        signoffs: dict[int, list[dict[str, Any]]] = {}
        requests: dict[int, dict[str, Any]] = {}
        versions: set[int] = set()
        for row in rows:
            subject, payload = json.loads(row.subject), json.loads(row.payload)
            if row.action == "artifact.version_registered":
                versions.add(subject["version"])
            elif row.action == "stage.changed":
                stage_of[subject["version"]] = (
                    payload["to"],
                    row.seq,
                    {**payload, "timestamp": row.timestamp, "actor": row.actor},
                )
                # A promotion's stage changes all carry its request id, also the one moving
                # the previous holder out: only the promoted version's own request approved it.
                request_id = payload.get("request_id")
                if request_id is not None:
                    if requests.get(request_id, {}).get("version") == subject["version"]:
                        promoted_by[(subject["version"], payload["to"])] = request_id
                    else:
                        stage_of[subject["version"]][2]["request_id"] = None
            elif row.action == "promotion.requested":
                requests[row.seq] = {
                    "rules_seq": payload["rules_seq"],
                    "requester": row.actor,
                    "version": subject["version"],
                }
            elif row.action == "promotion.signed_off":
                signoffs.setdefault(payload["request_id"], []).append(
                    {
                        "signer": row.actor,
                        "decision": payload["decision"],
                        "key_id": payload["key_id"],
                        "signed_at": payload["signed_at"],
                        "seq": row.seq,
                    }
                )
        if not versions:
            raise NotFound(f"{kind}/{name} did not exist in project {project!r} at {moment}")
        revoked = _revocations(session, {a["key_id"] for s in signoffs.values() for a in s})
        for approvals in signoffs.values():
            for approval in approvals:  # a valid sign-off whose key was revoked afterwards
                approval["key_revoked_at"] = revoked.get(approval["key_id"])
        stages: dict[str, list[dict[str, Any]]] = {}
        for version in sorted(versions):
            stage, seq, change = stage_of.get(version, ("registered", None, {}))
            request_id = change.get("request_id")
            restored = request_id is None and (version, stage) in promoted_by
            if restored:
                request_id = promoted_by[(version, stage)]
            entry: dict[str, Any] = {
                "version": version,
                "ref": f"{kind}/{name}@{version}",
                "since_seq": seq,
                "since": change.get("timestamp"),
                "reason": change.get("reason"),
                "traffic_share": change.get("traffic_share"),
            }
            if request_id is not None:
                entry["request_id"] = request_id
                entry["rules_seq"] = requests.get(request_id, {}).get("rules_seq")
                entry["requester"] = requests.get(request_id, {}).get("requester")
                entry["approvals"] = signoffs.get(request_id, [])
                entry["restored"] = restored  # back in this stage without a new request
            stages.setdefault(stage, []).append(entry)
        out: dict[str, Any] = {"project": project, "kind": kind, "name": name, "at": moment}
        out["stages"] = stages
        for holder in stages.get("production", []):
            ref = VersionRef(kind, name, holder["version"])
            lineage = self.registry.lineage(session, project, ref, "ancestors")
            holder["trained_on"] = [
                n["ref"] for n in lineage["nodes"] if n["kind"] in ("dataset", "rubric")
            ]
        return out


def _recorded_envelope(envelope: dict[str, Any], opened: OpenedEnvelope) -> dict[str, Any]:
    """The envelope as recorded: the payload and the one signature that verified.

    Only DSSE fields are kept. Whatever else the caller put into the JSON object is not
    signed, and could hold values canonical JSON refuses (a NaN, a huge integer), which would
    make the append fail after the decision was taken; other signatures are by keys the
    signer has not registered and vouch for nothing here.
    """
    # verify_envelope checks the first signature by a registered key and returns its key id
    _, _, signatures = parse_envelope(envelope)
    signature = next(sig for keyid, sig in signatures if keyid == opened.key_id)
    return {
        "payload": base64.b64encode(opened.payload).decode(),
        "payloadType": opened.payload_type,
        "signatures": [{"keyid": opened.key_id, "sig": base64.b64encode(signature).decode()}],
    }


def _satisfies(metadata: dict[str, Any], evidence: Any) -> bool:
    if evidence.mode is not None and metadata.get("mode") != evidence.mode:
        return False
    metrics = metadata.get("metrics")
    if not isinstance(metrics, dict):
        return False
    return all(t.holds(metrics.get(t.metric)) for t in evidence.thresholds)


def _ref(row: ArtifactVersionRow) -> str:
    return f"{row.kind}/{row.name}@{row.version}"


def _revocations(session: Session, key_ids: set[str]) -> dict[str, str]:
    """When each of ``key_ids`` that has been revoked was revoked.

    A sign-off counted before its key's revocation stays valid (the server refused the key
    from the revocation on); views show the revocation time beside it so a reader knows.
    """
    if not key_ids:
        return {}
    rows = session.execute(
        select(SigningKeyRow.key_id, SigningKeyRow.revoked_at).where(
            SigningKeyRow.key_id.in_(sorted(key_ids)), SigningKeyRow.revoked_seq.is_not(None)
        )
    ).all()
    return {kid: format_timestamp(at) for kid, at in rows if at is not None}


def _key_dict(row: SigningKeyRow) -> dict[str, Any]:
    return {
        "key_id": row.key_id,
        "principal_id": row.principal_id,
        "public_key": row.public_key,
        "name": row.name,
        "registered_seq": row.registered_seq,
        "registered_at": row.registered_at,
        "revoked_seq": row.revoked_seq,
        "revoked_at": row.revoked_at,
        "active": row.revoked_seq is None,
    }


__all__ = ["GovernanceService", "Refused"]
