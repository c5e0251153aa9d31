"""What the dashboard shows, fetched from the HTTP API with the signed-in user's token.

Nothing here touches the database or Streamlit: every function takes an :class:`ApiClient`,
so the server's RBAC decides what each user sees, and the functions can be tested on their
own. Endpoints that a server may not have yet (data contracts) answer ``None`` on 404 so the
pages can say so instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from controlplane.client.api import ApiClient, ApiError
from controlplane.crypto.dsse import EnvelopeError, verify_envelope
from controlplane.crypto.keys import public_key_from_b64
from controlplane.governance import statements
from controlplane.governance.rules import RuleSet, Threshold
from controlplane.ledger.entry import format_timestamp
from controlplane.registry.refs import KINDS, MODEL_KINDS, VersionRef

RULES_ACTION = "promotion_rules.installed"
REFUSAL_ACTIONS = (
    "promotion.refused",
    "signoff.refused",
    "contract.rejected",
    "contract.refused",
    "annotator.resolution_refused",
    "access.denied",
)
"""Ledger actions that record something the control plane said no to."""
HISTORY_ACTIONS = (
    "artifact.version_registered",
    "promotion.requested",
    "promotion.signed_off",
    "promotion.approved",
    "promotion.rejected",
    "promotion.refused",
    "promotion.withdrawn",
    "promotion.expired",
    "signoff.refused",
    "stage.changed",
)
PAGE = 5000


def artifact_path(project: str, kind: str, name: str) -> str:
    return "/v1/projects/{}/artifacts/{}/{}".format(
        *(quote(part, safe="") for part in (project, kind, name))
    )


def version_path(project: str, ref: VersionRef) -> str:
    return artifact_path(project, ref.kind, ref.name) + f"/versions/{ref.version}"


def optional(api: ApiClient, path: str, **params: Any) -> Any | None:
    """GET ``path``; None when the server has no such endpoint or record (404)."""
    try:
        return api.get(path, **params)
    except ApiError as exc:
        if exc.status in (404, 405):
            return None
        raise


# -- who and where ---------------------------------------------------------------------------


def projects_of(me: dict[str, Any], seen: Iterable[str] = ()) -> list[str]:
    """Projects to offer: the user's role grants (``*`` is no project), then ones seen."""
    out = [g["project"] for g in me.get("roles", []) if g["project"] != "*"]
    out += [p for p in seen if p]
    return list(dict.fromkeys(out))


def ledger_size(api: ApiClient) -> int:
    checkpoint = optional(api, "/v1/ledger/checkpoint")
    return 0 if checkpoint is None else int(checkpoint["tree_size"])


# -- the ledger ------------------------------------------------------------------------------


def entries(
    api: ApiClient, start: int = 0, end: int | None = None, **filters: Any
) -> Iterator[dict[str, Any]]:
    """Entries with ``seq`` in ``[start, end)`` that match the API's filters, in order."""
    while end is None or start < end:
        page = api.get("/v1/ledger/entries", start=start, limit=PAGE, **filters)
        for entry in page["data"]:
            if end is not None and entry["seq"] >= end:
                return
            yield entry
        if page.get("next_start") is None:
            return
        start = page["next_start"]


def recent(
    api: ApiClient, actions: Iterable[str], size: int, window: int = 20_000, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest entries (at most ``limit``) with one of ``actions`` among the last ``window``."""
    start = max(0, size - window)
    found = [e for action in actions for e in entries(api, start, size, action=action)]
    found.sort(key=lambda e: e["seq"], reverse=True)
    return found[:limit]


def first_seq_at(api: ApiClient, size: int, timestamp: str, *, after: bool = False) -> int:
    """The smallest seq stamped at or after ``timestamp`` (strictly after with ``after``), or
    ``size`` if none: a binary search (timestamps only grow along the chain), O(log n) calls.
    """
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        stamp = api.get(f"/v1/ledger/entries/{middle}")["timestamp"]
        if stamp < timestamp or (after and stamp == timestamp):
            low = middle + 1
        else:
            high = middle
    return low


def parse_time(text: str) -> str:
    """A user's RFC 3339 time in the ledger's one spelling (UTC, microseconds, ``Z``)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time like 2026-11-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_timestamp(moment)


def subject_label(subject: dict[str, Any]) -> str:
    label = "/".join(str(subject[k]) for k in ("kind", "name") if k in subject)
    if "version" in subject:
        label += f"@{subject['version']}"
    if subject.get("project"):
        label = f"{subject['project']}:{label}"
    return label


def entry_row(entry: dict[str, Any]) -> dict[str, Any]:
    """One line of a ledger table."""
    payload = entry.get("payload") or {}
    return {
        "seq": entry["seq"],
        "time": entry["timestamp"],
        "actor": entry["actor"],
        "action": entry["action"],
        "subject": subject_label(entry.get("subject") or {}),
        "reason": payload.get("reason", ""),
        "hash": entry["entry_hash"][:16],
    }


# -- rules -----------------------------------------------------------------------------------


def rules_at(api: ApiClient, seq: int) -> RuleSet:
    """The promotion rules recorded in ledger entry ``seq`` (a request is judged by these)."""
    entry = api.get(f"/v1/ledger/entries/{seq}")
    if entry["action"] != RULES_ACTION:
        raise ValueError(f"ledger entry {seq} is {entry['action']}, not {RULES_ACTION}")
    return RuleSet.from_mapping(entry["payload"]["rules"])


def rules_in_force(api: ApiClient) -> RuleSet | None:
    latest = None
    for entry in entries(api, action=RULES_ACTION):
        latest = entry
    return None if latest is None else RuleSet.from_mapping(latest["payload"]["rules"])


# -- artifacts -------------------------------------------------------------------------------


def artifacts(
    api: ApiClient, project: str, kind: str | None = None, q: str | None = None
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = api.get(
            f"/v1/projects/{quote(project, safe='')}/artifacts",
            kind=kind or None,
            q=q or None,
            offset=len(out),
            limit=1000,
        )
        out += page["data"]
        if not page["data"] or len(out) >= page["count"]:
            return out


def versions(api: ApiClient, project: str, kind: str, name: str) -> list[dict[str, Any]]:
    return list(api.get(artifact_path(project, kind, name))["versions"])


def inventory(
    api: ApiClient, project: str, kind: str | None = None, q: str | None = None
) -> list[dict[str, Any]]:
    """Every version of every artifact that matches (one request per artifact)."""
    return [
        v
        for a in artifacts(api, project, kind, q)
        for v in versions(api, project, a["kind"], a["name"])
    ]


def stage_counts(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{kind: {stage: count}}`` of versions."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        by_stage = counts.setdefault(row["kind"], {})
        by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + 1
    return {kind: counts[kind] for kind in KINDS if kind in counts}


def version(api: ApiClient, project: str, ref: VersionRef) -> dict[str, Any]:
    return dict(api.get(version_path(project, ref)))


def lineage(api: ApiClient, project: str, ref: VersionRef, direction: str = "both") -> dict:
    return dict(api.get(version_path(project, ref) + "/lineage", direction=direction))


def status(api: ApiClient, project: str, kind: str, name: str) -> dict[str, Any]:
    return dict(api.get(artifact_path(project, kind, name) + "/status"))


def in_production(api: ApiClient, project: str, rows: Iterable[dict[str, Any]]) -> list[dict]:
    """Each model version in production with its approvals and the data and rubric behind it
    (from the ledger, through the status endpoint)."""
    out = []
    names = sorted({(r["kind"], r["name"]) for r in rows if r["stage"] == "production"})
    for kind, name in names:
        if kind not in MODEL_KINDS:
            continue
        for holder in status(api, project, kind, name)["stages"].get("production", []):
            out.append({"kind": kind, "name": name, **holder})
    return out


def evaluations_of(api: ApiClient, project: str, target: dict[str, Any]) -> list[dict]:
    """The evaluation versions linked ``evaluated_on`` ``target`` (a version as served)."""
    out = []
    for edge in target.get("used_by", []):
        if edge["relation"] == "evaluated_on" and edge["kind"] == "evaluation":
            out.append(version(api, project, VersionRef.parse(edge["ref"])))
    return out


def history(api: ApiClient, project: str, ref: VersionRef) -> list[dict[str, Any]]:
    """Every ledger entry about this version: registration, requests, sign-offs, stages."""
    return [
        e
        for e in entries(api, kind=ref.kind, name=ref.name, project=project)
        if e["subject"].get("version") == ref.version and e["action"] in HISTORY_ACTIONS
    ]


def stage_timeline(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages a version held, from when, and why (registration, then each change)."""
    out = []
    for e in events:
        if e["action"] == "artifact.version_registered":
            out.append(
                {
                    "time": e["timestamp"],
                    "stage": "registered",
                    "seq": e["seq"],
                    "by": e["actor"],
                    "reason": "registered",
                }
            )
        elif e["action"] == "stage.changed":
            out.append(
                {
                    "time": e["timestamp"],
                    "stage": e["payload"]["to"],
                    "seq": e["seq"],
                    "by": e["actor"],
                    "reason": e["payload"].get("reason", ""),
                }
            )
    return out


@dataclass
class Signature:
    """One sign-off as recorded in the ledger, with its signature checked here."""

    request_id: int
    signer: str
    decision: str
    key_id: str
    signed_at: str
    comment: str
    seq: int
    roles: list[str] = field(default_factory=list)
    target_stage: str = ""
    verified: bool = False
    problem: str = ""

    def row(self) -> dict[str, Any]:
        """One line of an approvals table (the version page and the report)."""
        return {
            "request": self.request_id,
            "to": self.target_stage,
            "decision": self.decision,
            "signer": self.signer,
            "roles": ", ".join(self.roles),
            "key id": self.key_id[:16],
            "signed at": self.signed_at,
            "signature": "verified" if self.verified else f"INVALID: {self.problem}",
            "ledger seq": self.seq,
        }


def signatures(api: ApiClient, events: Iterable[dict[str, Any]]) -> list[Signature]:
    """The sign-offs among ``events``, each DSSE envelope verified against the signer's
    registered public key, and its statement checked to name this request and decision."""
    events = list(events)
    targets = {
        e["seq"]: e["payload"].get("target_stage", "")
        for e in events
        if e["action"] == "promotion.requested"
    }
    events = [e for e in events if e["action"] == "promotion.signed_off"]
    if not events:
        return []
    keys = {
        k["key_id"]: (k["principal_id"], public_key_from_b64(k["public_key"]))
        for k in api.get("/v1/keys")["data"]
    }
    out = []
    for e in events:
        p = e["payload"]
        sig = Signature(
            request_id=p["request_id"],
            signer=e["actor"],
            decision=p["decision"],
            key_id=p["key_id"],
            signed_at=p["signed_at"],
            comment=p.get("comment", ""),
            seq=e["seq"],
            roles=list(p.get("roles", [])),
            target_stage=targets.get(p["request_id"], ""),
        )
        owned = {kid: key for kid, (owner, key) in keys.items() if owner == e["actor"]}
        try:
            opened = verify_envelope(p.get("envelope"), owned, statements.PAYLOAD_TYPE)
            statement = statements.parse(opened.payload)
        except (EnvelopeError, ValueError) as exc:
            sig.problem = str(exc)
        else:
            if opened.key_id != sig.key_id:
                sig.problem = "signed with another key than the one recorded"
            elif (statement.get("request_id"), statement.get("decision")) != (
                sig.request_id,
                sig.decision,
            ):
                sig.problem = "the signed statement names another request or decision"
            else:
                sig.verified = True
        out.append(sig)
    return out


def requests(
    api: ApiClient, project: str, state: str | None = None, **filters: Any
) -> list[dict[str, Any]]:
    return list(
        api.get(
            f"/v1/projects/{quote(project, safe='')}/requests", state=state, limit=1000, **filters
        )["data"]
    )


# -- evidence for an approver ------------------------------------------------------------------


@dataclass
class Check:
    """One threshold of the rule against one evaluation's metric."""

    evidence: str
    evaluation: str
    mode: str
    metric: str
    threshold: str
    actual: Any
    holds: bool


@dataclass
class Evidence:
    """What an approver needs to judge a request, computed from the API."""

    checks: list[Check]
    satisfied: list[bool]  # per evidence clause of the rule
    describe: list[str]
    lineage: list[dict[str, Any]]  # datasets and rubrics behind the version, with stage
    gate_applies: bool
    required_stage: str
    quorum_missing: list[str]
    excluded: list[str]  # who may not approve this one
    signers: tuple[str, ...]  # roles that may sign off at all

    @property
    def lineage_ok(self) -> bool:
        return not self.gate_applies or all(n["stage"] == self.required_stage for n in self.lineage)


def evidence(api: ApiClient, request: dict[str, Any]) -> Evidence:
    """Evaluation metrics against the thresholds of the rule the request was opened under,
    the stages of its lineage, and what quorum still lacks."""
    rules = rules_at(api, request["rules_seq"])
    rule = rules.rule_for(request["kind"], request["target_stage"])
    project = request["project"]
    ref = VersionRef(request["kind"], request["name"], request["version"])
    target = version(api, project, ref)
    evaluations = evaluations_of(api, project, target)
    checks: list[Check] = []
    satisfied: list[bool] = []
    for clause in rule.evidence if rule else ():
        met = False
        for ev in evaluations:
            meta = ev.get("metadata") or {}
            if clause.mode is not None and meta.get("mode") != clause.mode:
                continue
            metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
            rows = [
                Check(
                    evidence=clause.describe(),
                    evaluation=ev["ref"],
                    mode=str(meta.get("mode", "")),
                    metric=t.metric,
                    threshold=f"must be {t.op} {t.value:g}",
                    actual=metrics.get(t.metric),
                    holds=t.holds(metrics.get(t.metric)),
                )
                for t in clause.thresholds
            ]
            checks += rows
            met = met or all(r.holds for r in rows)
        satisfied.append(met)
    nodes = lineage(api, project, ref, "ancestors")["nodes"]
    data = [n for n in nodes if n["kind"] in ("dataset", "rubric")]
    stages = rules.stages_for(request["kind"])
    gate = rules.lineage_gate_after
    gate_applies = (
        request["kind"] in MODEL_KINDS
        and gate in stages
        and request["target_stage"] in stages
        and stages.index(request["target_stage"]) > stages.index(gate)
    )
    missing = []
    quorum = request.get("quorum") or {}
    if quorum and not quorum.get("met"):
        lacking = quorum["required"] - quorum["approvals"]
        if lacking > 0:
            missing.append(f"{lacking} more approval{'s' if lacking > 1 else ''}")
        missing += [f"an approval by a {role}" for role in quorum.get("missing_roles", [])]
    excluded = []
    if rule is not None and not rule.requester_may_approve:
        excluded.append(f"{request['requester']} (the requester)")
    if rule is not None and not rule.creator_may_approve:
        excluded.append(f"{request['creator']} (created the version)")
    return Evidence(
        checks=checks,
        satisfied=satisfied,
        describe=[c.describe() for c in rule.evidence] if rule else [],
        lineage=data,
        gate_applies=gate_applies,
        required_stage=rules.lineage_required_stage,
        quorum_missing=missing,
        excluded=excluded,
        signers=rules.signers,
    )


# -- evaluations over time -------------------------------------------------------------------


def metric_series(api: ApiClient, project: str, kind: str, name: str) -> list[dict[str, Any]]:
    """One row per (model version, evaluation, metric): the data of the drift charts."""
    rows = []
    for v in versions(api, project, kind, name):
        full = version(api, project, VersionRef(kind, name, v["version"]))
        for ev in evaluations_of(api, project, full):
            meta = ev.get("metadata") or {}
            metrics = meta.get("metrics")
            if not isinstance(metrics, dict):
                continue
            for metric, value in metrics.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue
                rows.append(
                    {
                        "version": v["version"],
                        "model": v["ref"],
                        "stage": v["stage"],
                        "evaluation": ev["ref"],
                        "mode": str(meta.get("mode", "")),
                        "evaluated_at": ev["created_at"],
                        "metric": metric,
                        "value": float(value),
                    }
                )
    return rows


def thresholds(rules: RuleSet | None, kind: str) -> list[dict[str, Any]]:
    """The metric thresholds the rules in force set for ``kind``, per target stage."""
    out = []
    for rule in rules.rules if rules else ():
        if kind not in rule.kinds:
            continue
        for clause in rule.evidence:
            for t in clause.thresholds:
                out.append(
                    {
                        "metric": t.metric,
                        "op": t.op,
                        "value": t.value,
                        "stage": rule.to,
                        "mode": clause.mode or "any",
                    }
                )
    return out


def threshold_rules(limits: Iterable[dict[str, Any]], metric: str) -> list[Threshold]:
    """The distinct thresholds on ``metric`` among ``limits`` (from :func:`thresholds`)."""
    found = {(t["op"], t["value"]) for t in limits if t["metric"] == metric}
    return [Threshold(metric, op, value) for op, value in sorted(found)]


# -- contracts and MLflow (endpoints and metadata that other parts add) ------------------------


def contracts_for(api: ApiClient, project: str, digest: str) -> list[dict[str, Any]] | None:
    """Data contracts of ``project`` covering ``digest``, newest first; None when the server
    keeps no contracts (no such endpoint)."""
    found = optional(
        api, f"/v1/projects/{quote(project, safe='')}/contracts", covers=digest, limit=1000
    )
    if found is None:
        return None
    return [c for c in found["data"] if any(s["digest"] == digest for s in c["subjects"])]


def jobs(api: ApiClient, project: str) -> list[dict[str, Any]] | None:
    """Jobs of ``project``, newest first; None when the server runs no job queue."""
    found = optional(api, f"/v1/projects/{quote(project, safe='')}/jobs", limit=1000)
    return None if found is None else list(found["data"])


def provenance(v: dict[str, Any]) -> dict[str, Any] | None:
    """How a runner produced this version (job, trainer, runner, contract), if one did."""
    meta = v.get("metadata") or {}
    produced = meta.get("produced_by")
    if not isinstance(produced, dict):
        return None
    used = meta.get("contract") if isinstance(meta.get("contract"), dict) else {}
    return {**produced, "contract_id": used.get("id"), "inputs": meta.get("inputs", {})}


def mlflow_mirror(api: ApiClient, project: str, ref: VersionRef) -> dict[str, Any] | None:
    """Where the server's MLflow mirror put this version (``model_name``, ``mlflow_version``,
    null while not mirrored), read from MLflow by the API; None for kinds the mirror does not
    hold and servers without the endpoint. MLflow not answering is an ApiError (503)."""
    if ref.kind not in MODEL_KINDS:
        return None
    path = "/".join(
        quote(str(part), safe="")
        for part in ("projects", project, "artifacts", ref.kind, ref.name, "versions")
    )
    return optional(api, f"/v1/integrations/mlflow/{path}/{ref.version}")


def mlflow_link(
    v: dict[str, Any], tracking_uri: str | None = None, mirrored: dict[str, Any] | None = None
) -> str | None:
    """The MLflow page of a version: a URL its metadata records, the model version the mirror
    created (``mirrored``, from :func:`mlflow_mirror`), or the run a runner logged
    (``produced_by.mlflow_run_id``); the last two on an MLflow server reachable over HTTP."""
    meta = v.get("metadata") or {}
    for key in ("mlflow_url", "mlflow_uri"):
        if isinstance(meta.get(key), str):
            return str(meta[key])
    mlflow = meta.get("mlflow")
    if isinstance(mlflow, dict):
        for key in ("url", "ui_url", "model_version_url", "run_url"):
            if isinstance(mlflow.get(key), str):
                return str(mlflow[key])
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    base = tracking_uri.rstrip("/")
    if mirrored is not None and mirrored.get("mlflow_version") is not None:
        name = quote(str(mirrored["model_name"]), safe="")
        return f"{base}/#/models/{name}/versions/{int(mirrored['mlflow_version'])}"
    produced = meta.get("produced_by")
    run = produced.get("mlflow_run_id") if isinstance(produced, dict) else None
    if run:
        return f"{base}/#/runs/{quote(str(run), safe='')}"
    return None
