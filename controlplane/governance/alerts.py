"""Alert rules on evaluations of versions in production (``policies/alerts.yaml``).

When an ``evaluation`` version is registered ``evaluated_on`` a version that is in
``production`` and one of its metrics breaches a rule, an ``alert.raised`` entry is appended
(and delivered by the webhooks like any governance event). A rule with
``action: open_rollback_request`` marks the alert ``rollback_suggested: true``: it appears in
the approvers' alert queue (``GET /v1/projects/{p}/alerts``, ``controlplane alerts``), and an
approver decides and runs ``controlplane rollback`` with a reason. Rollback stays a human,
ledgered action; an alert never moves a stage by itself.

Lossless: :meth:`AlertMonitor.process` reads the evaluations registered after its cursor
(``outbox_cursors``, consumer ``alerts``) and appends the alerts and advances the cursor in one
ledger transaction. A post-commit listener calls it at once; the webhook worker calls it again
each round, so an evaluation committed just before a crash is still judged. Whether the
evaluated version is in production is decided when the evaluation is processed (normally
right after its commit).

The rules parse strictly and fail closed like the promotion rules: unknown keys, kinds, modes,
actions or malformed thresholds refuse to start the control plane.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from controlplane import clock
from controlplane.governance.rules import EVALUATION_MODES, RulesError, Threshold
from controlplane.ledger.entry import Entry
from controlplane.registry.projections import find_version
from controlplane.registry.refs import MODEL_KINDS
from controlplane.store.ledger_store import LedgerStore, Transaction
from controlplane.store.models import LedgerEntryRow, OutboxCursorRow

ACTIONS = ("notify", "open_rollback_request")
ALERT_ACTION = "alert.raised"
CURSOR = "alerts"
ALERT_ACTOR = "system"
_BREACH = re.compile(r"\s*(>=|<=|==|>|<)\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE]-?[0-9]+)?)\s*")
_RULE_KEYS = {"name", "kinds", "metric", "breach", "mode", "action"}


@dataclass(frozen=True)
class AlertRule:
    name: str
    kinds: tuple[str, ...]
    breach: Threshold  # the alert fires when this holds
    mode: str | None
    action: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kinds": list(self.kinds),
            "metric": self.breach.metric,
            "breach": f"{self.breach.op} {self.breach.value:g}",
            "mode": self.mode,
            "action": self.action,
        }


def load_rules(path: Path) -> tuple[AlertRule, ...]:
    """The rules in ``path``; none when the file does not exist; RulesError when invalid."""
    if not path.exists():
        return ()
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"cannot read alert rules {path}: {exc}") from None
    return parse_rules(raw)


def parse_rules(raw: Any) -> tuple[AlertRule, ...]:
    if not isinstance(raw, dict) or set(raw) - {"alerts"}:
        raise RulesError("alert rules must be a mapping with only the key 'alerts'")
    items = raw.get("alerts") or []
    if not isinstance(items, list):
        raise RulesError("alerts must be a list")
    rules: list[AlertRule] = []
    for position, item in enumerate(items):
        where = f"alerts[{position}]"
        if not isinstance(item, dict):
            raise RulesError(f"{where} must be a mapping")
        unknown = set(item) - _RULE_KEYS
        if unknown:
            raise RulesError(f"{where}: unknown keys {sorted(map(str, unknown))}")
        missing = {"name", "metric", "breach", "action"} - set(item)
        if missing:
            raise RulesError(f"{where}: missing {sorted(missing)}")
        name, metric, breach = item["name"], item["metric"], item["breach"]
        if not isinstance(name, str) or not name or any(r.name == name for r in rules):
            raise RulesError(f"{where}: name must be a unique non-empty string")
        if not isinstance(metric, str) or not metric:
            raise RulesError(f"{where}: metric must be a non-empty string")
        match = _BREACH.fullmatch(breach) if isinstance(breach, str) else None
        if not match or not math.isfinite(float(match[2])):
            raise RulesError(f"{where}: breach {breach!r} is not like '< 0.5'")
        kinds = item.get("kinds", list(MODEL_KINDS))
        if (
            not isinstance(kinds, list)
            or not kinds
            or any(k not in MODEL_KINDS for k in kinds)
            or len(set(kinds)) != len(kinds)
        ):
            raise RulesError(f"{where}: kinds must be a list of {', '.join(MODEL_KINDS)}")
        mode = item.get("mode")
        if mode is not None and mode not in EVALUATION_MODES:
            raise RulesError(f"{where}: mode must be one of {', '.join(EVALUATION_MODES)}")
        action = item["action"]
        if action not in ACTIONS:
            raise RulesError(f"{where}: action must be one of {', '.join(ACTIONS)}")
        rules.append(
            AlertRule(
                name, tuple(kinds), Threshold(metric, match[1], float(match[2])), mode, action
            )
        )
    return tuple(rules)


class AlertMonitor:
    """Judges newly registered evaluations against the alert rules."""

    def __init__(self, store: LedgerStore, rules: tuple[AlertRule, ...]) -> None:
        self.store = store
        self.rules = rules

    def on_commit(self, entries: list[Entry]) -> None:
        """Post-commit listener: judge at once when an evaluation was registered."""
        if self.rules and any(_is_evaluation(e.action, e.subject.get("kind")) for e in entries):
            self.process()

    def process(self) -> list[dict[str, Any]]:
        """Judge every evaluation after the cursor; the alerts raised (as entry dicts)."""
        if not self.rules:
            return []
        if not self._pending():
            return []
        raised: list[Entry] = []
        with self.store.transaction() as tx:
            tx.lock()  # one judge at a time; the cursor moves with the alerts it produced
            session = tx.session
            cursor = session.get(OutboxCursorRow, CURSOR)
            if cursor is None:
                cursor = OutboxCursorRow(consumer=CURSOR, last_seq=-1, updated_at=clock.now())
                session.add(cursor)
            rows = session.execute(
                select(LedgerEntryRow)
                .where(
                    LedgerEntryRow.seq > cursor.last_seq,
                    LedgerEntryRow.action == "artifact.version_registered",
                    LedgerEntryRow.subject_kind == "evaluation",
                )
                .order_by(LedgerEntryRow.seq)
            ).scalars()
            for row in rows:
                raised.extend(self._judge(tx, row))
            cursor.last_seq = tx.size - 1
            cursor.updated_at = clock.now()
        return [{"seq": e.seq, "subject": e.subject, "payload": e.payload} for e in raised]

    def _pending(self) -> bool:
        """Is there an evaluation after the cursor? (a read, so idle rounds take no lock)"""
        with self.store.db.read() as session:
            cursor = session.get(OutboxCursorRow, CURSOR)
            after = -1 if cursor is None else cursor.last_seq
            found = session.execute(
                select(LedgerEntryRow.seq)
                .where(
                    LedgerEntryRow.seq > after,
                    LedgerEntryRow.action == "artifact.version_registered",
                    LedgerEntryRow.subject_kind == "evaluation",
                )
                .limit(1)
            ).first()
            return found is not None

    def _judge(self, tx: Transaction, row: LedgerEntryRow) -> list[Entry]:
        subject, payload = json.loads(row.subject), json.loads(row.payload)
        project = subject["project"]
        metadata = payload.get("metadata") or {}
        metrics = metadata.get("metrics")
        if not isinstance(metrics, dict):
            return []
        out: list[Entry] = []
        for edge in payload.get("lineage") or []:
            if edge.get("relation") != "evaluated_on":
                continue
            target = find_version(tx.session, project, edge["kind"], edge["name"], edge["version"])
            if target is None or target.stage != "production":
                continue
            for rule in self.rules:
                if target.kind not in rule.kinds:
                    continue
                if rule.mode is not None and metadata.get("mode") != rule.mode:
                    continue
                value = metrics.get(rule.breach.metric)
                if not rule.breach.holds(value):
                    continue
                out.append(
                    tx.append(
                        actor=ALERT_ACTOR,
                        action=ALERT_ACTION,
                        subject={
                            "project": project,
                            "kind": target.kind,
                            "name": target.name,
                            "version": target.version,
                        },
                        payload={
                            "rule": rule.as_dict(),
                            "metric": rule.breach.metric,
                            "value": value,
                            "stage": "production",
                            "evaluation": {
                                "kind": subject["kind"],
                                "name": subject["name"],
                                "version": subject["version"],
                                "seq": row.seq,
                                "mode": metadata.get("mode"),
                            },
                            "rollback_suggested": rule.action == "open_rollback_request",
                        },
                    )
                )
        return out

    def alerts(self, project: str, limit: int = 1000) -> list[dict[str, Any]]:
        """The project's alerts, newest first (the approvers' queue)."""
        with self.store.db.read() as session:
            rows = session.execute(
                select(LedgerEntryRow)
                .where(LedgerEntryRow.action == ALERT_ACTION, LedgerEntryRow.project == project)
                .order_by(LedgerEntryRow.seq.desc())
                .limit(limit)
            ).scalars()
            out = []
            for row in rows:
                subject, payload = json.loads(row.subject), json.loads(row.payload)
                out.append(
                    {
                        "seq": row.seq,
                        "timestamp": row.timestamp,
                        "ref": f"{subject['kind']}/{subject['name']}@{subject['version']}",
                        **payload,
                    }
                )
            return out


def _is_evaluation(action: str, kind: Any) -> bool:
    return action == "artifact.version_registered" and kind == "evaluation"
