"""The mirror: makes MLflow's model registry match our projections, after the ledger commits.

- **Post-commit**: :meth:`MlflowMirror.on_commit` is a :class:`LedgerStore` listener. It only
  notes which reward models and policies a committed transaction touched and wakes a worker
  thread, so a promotion never waits for MLflow, and MLflow being down can neither block nor
  lose one: the desired state is always re-derived from the database, so a later sync catches
  up. A failed artifact is retried with the next sync.
- **Sync** (:meth:`sync`): for each artifact, read what MLflow holds, compare
  (:mod:`.compare`), fix everything, then write bookkeeping tags. Idempotent: an artifact that
  already matches costs two reads and no writes.
- **Catch-up** (:meth:`catch_up`): the API server's background pass (at start, a full sync;
  then every ``mlflow_sync_interval_seconds``, a cheap pass): one listing of our registered
  models against one grouped query of the ledger's projections; only models whose bookkeeping
  tags disagree get a full sync.
- **Reconcile** (:meth:`reconcile`): the operator's comparison, optionally fixing. Drift
  (differences that our own pending work does not explain) is always recorded in the ledger:
  ``mlflow.drift_detected`` (the items, one entry per project) before anything is changed,
  then ``mlflow.reconciled`` (what the fix changed). An explicit reconcile records pending
  items too; automatic syncs record only drift.

Syncs are serialised across threads and processes (replicas on one PostgreSQL take an
advisory lock; processes on one SQLite file a file lock), so two never create the same version
twice.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from controlplane import clock
from controlplane.authz.service import SYSTEM_ACTOR
from controlplane.config import Settings
from controlplane.integrations.mlflow import state
from controlplane.integrations.mlflow.client import (
    MlflowUnavailable,
    error_code,
    make_client,
    redact,
)
from controlplane.integrations.mlflow.compare import (
    Comparison,
    ObservedModel,
    ObservedVersion,
    aliases_tag,
    compare,
    managed_aliases,
)
from controlplane.integrations.mlflow.state import (
    MANAGED_ALIASES,
    ArtifactKey,
    load_desired,
)
from controlplane.ledger.entry import Entry, format_timestamp
from controlplane.registry.refs import MODEL_KINDS
from controlplane.store.ledger_store import LedgerStore
from controlplane.store.models import ArtifactRow

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("controlplane.mlflow")

RELEVANT_ACTIONS = frozenset({"artifact.version_registered", "stage.changed"})
DRIFT_ACTION = "mlflow.drift_detected"
RECONCILED_ACTION = "mlflow.reconciled"
MAX_LEDGER_ITEMS = 500
"""At most this many items or changes per ledger entry (the count is always complete)."""
ABORT_AFTER = 3
"""Consecutive artifacts failing before a sync stops trying (MLflow is down, not one model)."""
SYNC_LOCK_KEY = 0x6D6C666C6F770001  # "mlflow" + 1: one mirror per database
REGISTRY_EVENTS = frozenset(
    {"registered_model", "model_version", "model_version_tag", "model_version_alias"}
)


def affected_artifacts(entries: Iterable[Entry]) -> set[ArtifactKey]:
    """The reward models and policies whose MLflow state ``entries`` change."""
    out: set[ArtifactKey] = set()
    for entry in entries:
        subject = entry.subject
        if entry.action in RELEVANT_ACTIONS and subject.get("kind") in MODEL_KINDS:
            project, name = subject.get("project"), subject.get("name")
            if isinstance(project, str) and isinstance(name, str):
                out.add(ArtifactKey(project, str(subject["kind"]), name))
    return out


@dataclass
class Report:
    """What one sync or reconcile found and did."""

    source: str
    fix: bool
    artifacts: int = 0
    compared: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ledger_seqs: list[int] = field(default_factory=list)
    failed: set[ArtifactKey] = field(default_factory=set)
    unfixable: int = 0

    def error(self, key: ArtifactKey, exc: BaseException | str) -> None:
        self.failed.add(key)
        text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.errors.append({"model": key.model_name, "artifact": str(key), "error": text[:500]})

    @property
    def in_sync(self) -> bool:
        """MLflow matches the ledger now (nothing found, or everything found was fixed)."""
        if self.errors or self.unfixable:
            return False
        return not self.items or self.fix

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fix": self.fix,
            "artifacts": self.artifacts,
            "in_sync": self.in_sync,
            "drift": sum(1 for i in self.items if i["cause"] == "drift"),
            "pending": sum(1 for i in self.items if i["cause"] == "pending"),
            "items": self.items,
            "changes": self.changes,
            "errors": self.errors,
            "ledger_seqs": self.ledger_seqs,
        }


class MlflowMirror:
    """Mirror of reward models and policies into MLflow's model registry."""

    def __init__(self, settings: Settings, store: LedgerStore) -> None:
        self.settings = settings
        self.store = store
        self.db = store.db
        self._client: MlflowClient | None = None
        self._client_lock = threading.Lock()
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._dirty: set[ArtifactKey] = set()
        self._failed: set[ArtifactKey] = set()
        self._catch_up: str | None = None  # "full" or "cheap" when one is due
        self._interval = 0
        self._next_catch_up = 0.0
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._deliveries: dict[str, float] = {}
        self.last_sync: dict[str, Any] | None = None
        self.last_success_at: str | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.mlflow_enabled

    # -- the client ------------------------------------------------------------------------------

    def client(self) -> MlflowClient:
        """The MLflow client, created on first use (MLflow is imported only then)."""
        with self._client_lock:
            if self._client is None:
                uri = redact(self.settings.resolved_mlflow_registry_uri)
                try:
                    self._client = make_client(self.settings)
                except Exception as exc:
                    raise MlflowUnavailable(f"cannot open MLflow at {uri}: {exc}") from exc
            return self._client

    # -- post-commit and the worker --------------------------------------------------------------

    def on_commit(self, entries: Sequence[Entry]) -> None:
        """LedgerStore listener: queue the artifacts a committed transaction changed."""
        if self.enabled:
            keys = affected_artifacts(entries)
            if keys:
                self.enqueue(keys)

    def enqueue(self, keys: Iterable[ArtifactKey]) -> None:
        with self._cond:
            if self._closed:
                return
            self._dirty.update(keys)
            self._ensure_thread()
            self._cond.notify_all()

    def start_background(self) -> bool:
        """Catch up with everything now (in the worker), then periodically. False when off."""
        interval = self.settings.mlflow_sync_interval_seconds
        if not self.enabled or interval <= 0:
            return False
        with self._cond:
            self._interval = interval
            self._next_catch_up = time.monotonic() + interval
            self._catch_up = "full"
            self._ensure_thread()
            self._cond.notify_all()
        return True

    def stop_background(self) -> None:
        with self._cond:
            self._interval = 0
            self._catch_up = None
            self._cond.notify_all()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the queue is empty and no sync runs (for tests and shutdown)."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._dirty or self._busy or self._catch_up), timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="controlplane-mlflow-mirror", daemon=True
            )
            self._thread.start()

    def _next_job(self) -> tuple[set[ArtifactKey], str | None] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._dirty or self._catch_up:
                    break
                timeout = None
                if self._interval:
                    timeout = self._next_catch_up - time.monotonic()
                    if timeout <= 0:
                        self._catch_up = "cheap"
                        break
                self._cond.wait(timeout)
            keys = self._dirty | self._failed
            mode = self._catch_up
            self._dirty, self._failed, self._catch_up = set(), set(), None
            if mode and self._interval:
                self._next_catch_up = time.monotonic() + self._interval
            self._busy = True
            return keys, mode

    def _work(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            keys, mode = job
            failed: set[ArtifactKey] = set()
            try:
                if mode == "full":
                    failed = self.sync(None).failed
                else:
                    if keys:
                        failed |= self.sync(keys).failed
                    if mode == "cheap":
                        failed |= self.catch_up().failed
            except MlflowUnavailable as exc:
                log.warning("MLflow mirror: %s", exc.detail)
                failed = keys
            except Exception:
                log.exception("MLflow mirror failed")
                failed = keys
            finally:
                with self._cond:
                    self._failed |= failed
                    self._busy = False
                    self._cond.notify_all()

    # -- syncing and reconciling -----------------------------------------------------------------

    def sync(self, keys: Iterable[ArtifactKey] | None = None) -> Report:
        """Make MLflow match our projections for ``keys`` (default: everything). Best effort:
        MLflow's errors are in the report and logged, never raised."""
        report = self._run(keys, fix=True, actor=SYSTEM_ACTOR, source="sync", record_all=False)
        for error in report.errors[:3]:
            log.warning("MLflow mirror: %s: %s", error["model"], error["error"])
        if len(report.errors) > 3:
            log.warning("MLflow mirror: %d more models failed", len(report.errors) - 3)
        return report

    def reconcile(
        self,
        actor: str,
        *,
        fix: bool,
        keys: Iterable[ArtifactKey] | None = None,
        source: str = "reconcile",
        extra: dict[str, Any] | None = None,
    ) -> Report:
        """Compare (and with ``fix`` repair), recording what differs in the ledger."""
        report = self._run(
            keys, fix=fix, actor=actor, source=source, record_all=source == "reconcile", extra=extra
        )
        if report.artifacts and not report.compared:
            raise MlflowUnavailable(f"MLflow did not answer: {report.errors[0]['error']}")
        return report

    def catch_up(self) -> Report:
        """The cheap periodic pass: a full sync only of models whose bookkeeping disagrees."""
        with self.db.read() as session:
            seqs = state.last_seqs(session)
        if not seqs:
            return Report("sync", True)
        models = self._list_models()
        stale = []
        for key, (last_seq, _count) in seqs.items():
            model = models.get(key.model_name)
            if model is None:
                stale.append(key)
                continue
            tags = model.tags or {}
            latest = max((int(v.version) for v in model.latest_versions or []), default=0)
            if (
                tags.get(state.SYNCED_SEQ) != str(last_seq)
                or tags.get(state.SYNCED_ALIASES) != aliases_tag(managed_aliases(model.aliases))
                or latest > int(tags.get(state.SYNCED_MAX_VERSION) or 0)
            ):
                stale.append(key)
        return self.sync(stale) if stale else Report("sync", True, artifacts=len(seqs))

    def _list_models(self) -> dict[str, Any]:
        client = self.client()
        out: dict[str, Any] = {}
        token = None
        while True:
            page = client.search_registered_models(
                filter_string=f"tags.`{state.MANAGED}` = 'true'",
                max_results=1000,
                page_token=token,
            )
            out.update({m.name: m for m in page})
            token = page.token
            if not token:
                return out

    def _run(
        self,
        keys: Iterable[ArtifactKey] | None,
        *,
        fix: bool,
        actor: str,
        source: str,
        record_all: bool,
        extra: dict[str, Any] | None = None,
    ) -> Report:
        report = Report(source, fix)
        with self._exclusive():
            with self.db.read() as session:
                desired = load_desired(session, keys)
            report.artifacts = len(desired)
            if not desired:
                return report
            try:
                client = self.client()
            except MlflowUnavailable as exc:
                for d in desired:
                    report.error(d.key, exc.detail)
                self._note(report)
                return report
            comparisons: list[Comparison] = []
            failures = 0
            for d in desired:
                if failures >= ABORT_AFTER:
                    report.error(d.key, "skipped: MLflow failed for the previous artifacts")
                    continue
                try:
                    comparisons.append(compare(d, observe(client, d.model_name)))
                    failures = 0
                except Exception as exc:
                    report.error(d.key, exc)
                    failures += 1
            report.compared = len(comparisons)
            report.items = [i for c in comparisons for i in c.items]
            report.unfixable = sum(1 for c in comparisons if c.collision)
            recorded = [i for i in report.items if record_all or i["cause"] == "drift"]
            drift_seqs = self._record(DRIFT_ACTION, actor, recorded, source, fix, extra)
            report.ledger_seqs.extend(drift_seqs.values())
            if fix:
                for c in comparisons:
                    try:
                        report.changes.extend(apply(client, c))
                    except Exception as exc:
                        report.error(c.desired.key, exc)
                if drift_seqs:
                    done = [ch for ch in report.changes if ch["project"] in drift_seqs]
                    seqs = self._record(
                        RECONCILED_ACTION, actor, done, source, fix, extra, drift_seqs
                    )
                    report.ledger_seqs.extend(seqs.values())
            self._note(report)
            return report

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One sync at a time: in this process, and across processes on the same database."""
        with self._lock:
            if self.db.dialect == "postgresql":
                with self.db.writer.connect() as conn:
                    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SYNC_LOCK_KEY})
                    conn.commit()  # a session-level lock: no transaction held open meanwhile
                    try:
                        yield
                    finally:
                        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SYNC_LOCK_KEY})
                        conn.commit()
                return
            database = make_url(self.db.url).database
            if not database or database == ":memory:":
                yield
                return
            lock_path = Path(database).with_name(Path(database).name + ".mlflow-sync.lock")
            with lock_path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _note(self, report: Report) -> None:
        at = format_timestamp(clock.now())
        self.last_sync = {
            "at": at,
            "source": report.source,
            "ok": not report.errors,
            "artifacts": report.artifacts,
            "items": len(report.items),
            "changes": len(report.changes),
            "errors": report.errors[:3],
        }
        if not report.errors:
            self.last_success_at = at

    def _record(
        self,
        action: str,
        actor: str,
        rows: list[dict[str, Any]],
        source: str,
        fix: bool,
        extra: dict[str, Any] | None,
        drift_seqs: dict[str, int] | None = None,
    ) -> dict[str, int]:
        """One entry per project; ``mlflow.reconciled`` also for projects that changed nothing
        (so every recorded drift is followed by what was done about it)."""
        by_project: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_project[row["project"]].append(row)
        for project in drift_seqs or {}:
            by_project.setdefault(project, [])
        if not by_project:
            return {}
        listed = "changes" if action == RECONCILED_ACTION else "items"
        out: dict[str, int] = {}
        with self.store.transaction() as tx:
            for project in sorted(by_project):
                group = by_project[project]
                payload: dict[str, Any] = {
                    "source": source,
                    "fix": fix,
                    "registry": redact(self.settings.resolved_mlflow_registry_uri),
                    "count": len(group),
                    listed: group[:MAX_LEDGER_ITEMS],
                    "truncated": len(group) > MAX_LEDGER_ITEMS,
                    **(extra or {}),
                }
                if drift_seqs is not None:
                    payload["drift_seq"] = drift_seqs[project]
                entry = tx.append(
                    actor=actor,
                    action=action,
                    subject={"kind": "integration", "name": "mlflow", "project": project},
                    payload=payload,
                )
                out[project] = entry.seq
        return out

    # -- webhooks and status ---------------------------------------------------------------------

    def on_webhook(self, delivery_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """A verified MLflow delivery: reconcile the model it names at once, with fix (the
        ledger is the authority for aliases). Deliveries are remembered for the timestamp
        tolerance, so a replay inside it is answered without another reconcile."""
        entity, action = event.get("entity"), event.get("action")
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        name = data.get("name") if isinstance(data, dict) else None
        out: dict[str, Any] = {"accepted": True, "event": f"{entity}.{action}", "model": name}
        if not self.enabled:
            return {**out, "reconciled": False, "reason": "the MLflow mirror is off"}
        if entity not in REGISTRY_EVENTS or not isinstance(name, str):
            return {**out, "reconciled": False, "reason": "not a model registry event"}
        if self._seen(delivery_id):
            return {**out, "reconciled": False, "reason": "delivery already handled"}
        key = self._key_for_model(name)
        if key is None:
            return {**out, "reconciled": False, "reason": "not a model of this control plane"}
        report = self.reconcile(
            SYSTEM_ACTOR,
            fix=True,
            keys=[key],
            source="webhook",
            extra={"delivery_id": delivery_id[:100], "event": f"{entity}.{action}"[:100]},
        )
        self._remember(delivery_id)
        return {**out, "reconciled": True, "report": report.to_dict()}

    def _seen(self, delivery_id: str) -> bool:
        horizon = time.monotonic() - self.settings.mlflow_webhook_tolerance_seconds
        with self._cond:
            for old in [d for d, at in self._deliveries.items() if at < horizon]:
                del self._deliveries[old]
            return delivery_id in self._deliveries

    def _remember(self, delivery_id: str) -> None:
        with self._cond:
            if len(self._deliveries) < 100_000:
                self._deliveries[delivery_id] = time.monotonic()

    def _key_for_model(self, name: str) -> ArtifactKey | None:
        with self.db.read() as session:
            rows = session.execute(
                select(ArtifactRow.project, ArtifactRow.kind, ArtifactRow.name).where(
                    ArtifactRow.kind.in_(MODEL_KINDS)
                )
            ).all()
        for project, kind, artifact in rows:
            key = ArtifactKey(project, kind, artifact)
            if key.model_name == name:
                return key
        return None

    def locate(self, key: ArtifactKey, version: int) -> dict[str, Any]:
        """Where one version of ours is in MLflow's registry, so an interface can link to it.

        MLflow numbers its versions itself, so the number is found the way a sync finds it
        (the version's ``controlplane.*`` tags, see :func:`compare`). ``mlflow_version`` is
        None while the version is not mirrored (mirror off, not a model kind, not synced yet);
        MLflow not answering is :class:`MlflowUnavailable`, never a silent "not mirrored".
        """
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "model_name": key.model_name,
            "version": version,
            "mlflow_version": None,
        }
        if not self.enabled:
            return out
        with self.db.read() as session:
            desired = load_desired(session, [key])
        if not desired:
            return out
        try:
            observed = observe(self.client(), key.model_name)
        except MlflowUnavailable:
            raise
        except Exception as exc:
            raise MlflowUnavailable(f"MLflow did not answer: {exc}"[:500]) from exc
        out["mlflow_version"] = compare(desired[0], observed).mapping.get(version)
        return out

    def status(self) -> dict[str, Any]:
        """Configuration, queue, last sync and, from one listing, how far MLflow is behind."""
        with self._cond:
            queued, failed, busy = len(self._dirty), len(self._failed), self._busy
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "tracking_uri": redact(self.settings.resolved_mlflow_tracking_uri),
            "registry_uri": redact(self.settings.resolved_mlflow_registry_uri),
            "webhook_secret_configured": bool(self.settings.mlflow_webhook_secret),
            "sync_interval_seconds": self.settings.mlflow_sync_interval_seconds,
            "background": self._interval > 0,
            "queued": queued,
            "failed": failed,
            "syncing": busy,
            "last_sync": self.last_sync,
            "last_success_at": self.last_success_at,
            "reachable": None,
            "artifacts": 0,
            "pending_versions": 0,
            "behind_artifacts": 0,
        }
        if not self.enabled:
            return out
        with self.db.read() as session:
            desired = load_desired(session)
        out["artifacts"] = len(desired)
        if not desired:
            return out
        try:
            models = self._list_models()
        except Exception as exc:
            text = exc.detail if isinstance(exc, MlflowUnavailable) else f"{exc}"
            out.update(reachable=False, error=text[:500], pending_versions=None)
            out.update(behind_artifacts=None)
            return out
        pending = behind = 0
        for d in desired:
            model = models.get(d.model_name)
            synced = -1
            if model is not None:
                try:
                    synced = int((model.tags or {}).get(state.SYNCED_SEQ, -1))
                except ValueError:
                    synced = -1
            pending += sum(1 for v in d.versions if v.seq > synced)
            behind += d.last_seq > synced
        out.update(reachable=True, pending_versions=pending, behind_artifacts=behind)
        return out


# -- MLflow calls ----------------------------------------------------------------------------------


def observe(client: MlflowClient, name: str) -> ObservedModel | None:
    """What MLflow holds for registered model ``name`` (None: no such model)."""
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    versions: list[ObservedVersion] = []
    token = None
    while True:
        page = client.search_model_versions(
            filter_string=f"name = '{name}'", max_results=10_000, page_token=token
        )
        versions.extend(
            ObservedVersion(int(v.version), str(v.source or ""), dict(v.tags or {})) for v in page
        )
        token = page.token
        if not token:
            break
    aliases = {str(a): int(v) for a, v in (model.aliases or {}).items()}
    return ObservedModel(name, dict(model.tags or {}), aliases, versions)


def apply(client: MlflowClient, c: Comparison) -> list[dict[str, Any]]:
    """Remove the differences of ``c``; returns what was changed (bookkeeping tags aside)."""
    d = c.desired
    name, key = d.model_name, d.key
    if c.collision:
        return []
    changes: list[dict[str, Any]] = []

    def note(action: str, **fields: Any) -> None:
        changes.append({"action": action, "model": name, "project": key.project, **fields})

    observed_tags = c.observed.tags if c.observed is not None else {}
    if c.observed is None:
        client.create_registered_model(
            name,
            tags=d.model_tags(),
            description=f"{key.kind}/{key.name} of project {key.project}, mirrored by "
            "controlplane: aliases follow its ledger; do not move them here.",
        )
        observed_tags = d.model_tags()
        note("create_model")
    for tag, value in c.model_tags.items():
        client.set_registered_model_tag(name, tag, value)
        note("set_model_tag", key_name=tag, value=value)
    mapping = dict(c.mapping)
    for v in c.missing:
        created = client.create_model_version(
            name,
            source=v.uri,
            tags=d.version_tags(v),
            description=f"{key.kind}/{key.name}@{v.version} ({v.digest}), registered at "
            f"ledger seq {v.seq}",
        )
        mapping[v.version] = int(created.version)
        note("create_version", version=v.version, mlflow_version=int(created.version))
    for mlflow_version, tag, value in c.version_tags:
        client.set_model_version_tag(name, str(mlflow_version), tag, value)
        note("set_tag", mlflow_version=mlflow_version, key_name=tag, value=value)
    for mlflow_version, tag, value in c.acknowledge:
        client.set_model_version_tag(name, str(mlflow_version), tag, value)
        note("tag_version", mlflow_version=mlflow_version, key_name=tag, value=value)
    current = managed_aliases(c.observed.aliases) if c.observed is not None else {}
    holders = d.holders()
    final: dict[str, int] = {}
    for alias in MANAGED_ALIASES:
        holder = holders.get(alias)
        target = mapping.get(holder.version) if holder is not None else None
        if target != current.get(alias):
            if target is None:
                client.delete_registered_model_alias(name, alias)
                note("delete_alias", alias=alias, mlflow_version=current.get(alias))
            else:
                assert holder is not None
                client.set_registered_model_alias(name, alias, str(target))
                note("set_alias", alias=alias, version=holder.version, mlflow_version=target)
        if target is not None:
            final[alias] = target
    highest = max([*mapping.values(), c.observed.max_version if c.observed else 0])
    for tag, value in (
        (state.SYNCED_SEQ, str(d.last_seq)),
        (state.SYNCED_ALIASES, aliases_tag(final)),
        (state.SYNCED_MAX_VERSION, str(highest)),
    ):
        if observed_tags.get(tag) != value:
            client.set_registered_model_tag(name, tag, value)
    return changes
