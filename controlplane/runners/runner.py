"""The reference runner: poll, claim under a contract, fetch and check inputs, train, report.

One job at a time. While it trains, a background thread renews the lease every third of the
lease; if the server says the claim is gone (expired, cancelled), the next progress report
of the trainer raises :class:`LeaseLost` and the work is abandoned without reporting. A stop
request (Ctrl-C) during a job releases the lease, recorded as ``job.released``, so the job
returns to the queue at once instead of waiting for the lease to expire.

The trainers (and torch) are imported only when a job is trained; a custom ``train``
function can stand in for them.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controlplane.client.api import ApiError
from controlplane.registry.digests import digest_path
from controlplane.runners.sdk import (
    ContractRefused,
    InputMismatch,
    InputUnavailable,
    LeaseLost,
    Presented,
    RunnerClient,
    RunnerError,
)

Progress = Callable[[float, str], None]
TrainFn = Callable[..., Any]
"""``train(trainer, inputs, hyperparameters, out_dir, *, progress, mlflow_tracking_uri,
run_name, tags)`` returning an object with ``output_path``, ``metrics``, ``mlflow_run_id``
and ``parameters`` (the built-in one is :func:`controlplane.runners.trainers.run_trainer`)."""


class RunnerEvents(Protocol):
    """What a runner tells its operator (the CLI draws a progress bar from these)."""

    def idle(self) -> None: ...
    def claimed(self, job: Mapping[str, Any]) -> None: ...
    def step(self, job: Mapping[str, Any], fraction: float, message: str) -> None: ...
    def done(self, outcome: Outcome) -> None: ...
    def notice(self, message: str) -> None: ...


class _Quiet:
    def idle(self) -> None:
        pass

    def claimed(self, job: Mapping[str, Any]) -> None:
        pass

    def step(self, job: Mapping[str, Any], fraction: float, message: str) -> None:
        pass

    def done(self, outcome: Outcome) -> None:
        pass

    def notice(self, message: str) -> None:
        pass


@dataclass
class Outcome:
    """How one job ended for this runner."""

    job_id: int
    state: str
    """``succeeded``, ``failed``, ``released`` or ``lost``."""
    detail: str = ""
    output: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunnerConfig:
    projects: Sequence[str]
    contracts: Sequence[Presented]
    work_dir: Path
    poll_interval: float = 5.0
    lease_seconds: int | None = None
    trainers: list[str] | None = None
    mlflow_tracking_uri: str | None = None
    upload_outputs: bool = True


def default_train(*args: Any, **kwargs: Any) -> Any:
    from controlplane.runners.trainers import run_trainer

    return run_trainer(*args, **kwargs)


def training_error_types() -> tuple[type[BaseException], ...]:
    try:
        from controlplane.runners.trainers import TrainingError
    except ImportError:  # pragma: no cover - the package is part of controlplane
        return ()
    return (TrainingError,)


class _Lease(threading.Thread):
    """Heartbeats in the background; remembers when the claim was lost."""

    def __init__(self, client: RunnerClient, job: Mapping[str, Any], interval: float) -> None:
        super().__init__(name=f"lease-{job['id']}", daemon=True)
        self.client = client
        self.job = job
        self.interval = interval
        self.progress: dict[str, Any] = {}
        self.lost = threading.Event()
        self.reason = ""
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                self.client.heartbeat(self.job, self.progress)
            except LeaseLost as exc:
                self.reason = str(exc)
                self.lost.set()
                return
            except ApiError:
                continue  # a passing outage: the lease may still be renewed in time

    def stop(self) -> None:
        self._stop_event.set()


class Runner:
    def __init__(
        self,
        client: RunnerClient,
        config: RunnerConfig,
        events: RunnerEvents | None = None,
        train: TrainFn | None = None,
    ) -> None:
        if not config.contracts:
            raise RunnerError("a runner claims jobs only with a data contract: give at least one")
        self.client = client
        self.config = config
        self.events: RunnerEvents = events or _Quiet()
        self.train = train or default_train
        self.stop = threading.Event()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, *, once: bool = False, max_idle: float | None = None) -> list[Outcome]:
        """Poll and work until stopped (``once``: after one job; ``max_idle``: after that long
        without a job). Raises :class:`ContractRefused` if a contract is refused."""
        outcomes: list[Outcome] = []
        idle_since = time.monotonic()
        while not self.stop.is_set():
            try:
                job = self.poll()
            except ApiError as exc:
                if exc.status != 0 and exc.status < 500:
                    raise
                self.events.notice(f"control plane unavailable, polling again: {exc.detail}")
                self.stop.wait(self.config.poll_interval)  # a passing outage: poll again
                continue
            if job is None:
                if max_idle is not None and time.monotonic() - idle_since >= max_idle:
                    break
                self.events.idle()
                self.stop.wait(self.config.poll_interval)
                continue
            outcomes.append(self.process(job))
            idle_since = time.monotonic()
            if once:
                break
        return outcomes

    def poll(self) -> dict[str, Any] | None:
        """Claim the first job any of the contracts covers, in any of the projects."""
        for project in self.config.projects:
            for contract in self.config.contracts:
                job = self.client.claim_next(
                    project,
                    contract,
                    lease_seconds=self.config.lease_seconds,
                    trainers=self.config.trainers,
                )
                if job is not None:
                    return job
        return None

    # -- one job -------------------------------------------------------------------------------

    def process(self, job: dict[str, Any]) -> Outcome:
        """Work one claimed job to its end; Ctrl-C releases it and re-raises."""
        self.events.claimed(job)
        lease_seconds = int((job.get("lease") or {}).get("lease_seconds") or 60)
        lease = _Lease(self.client, job, max(1.0, lease_seconds / 3))
        lease.start()
        try:
            outcome = self._work(job, lease)
        except KeyboardInterrupt:
            lease.stop()
            try:
                self.client.release(job, "the runner was stopped (interrupted) before finishing")
                outcome = Outcome(job["id"], "released", "interrupted; the job is queued again")
            except (LeaseLost, ApiError) as exc:
                outcome = Outcome(job["id"], "lost", str(exc))
            self.events.done(outcome)
            raise
        finally:
            lease.stop()
        self.events.done(outcome)
        return outcome

    def _work(self, job: dict[str, Any], lease: _Lease) -> Outcome:
        job_dir = self.config.work_dir / f"job-{job['id']}-claim-{job['claim_seq']}"
        inputs_dir, out_dir = job_dir / "inputs", job_dir / "output"

        def progress(fraction: float, message: str) -> None:
            lease.progress = {"fraction": round(float(fraction), 4), "message": message[:500]}
            self.events.step(job, fraction, message)
            if lease.lost.is_set():
                raise LeaseLost(lease.reason)

        try:
            progress(0.0, "fetching and checking inputs")
            inputs = self._fetch(job, inputs_dir)
            progress(0.01, "inputs verified; starting the trainer")
            result = self.train(
                job["trainer"],
                inputs,
                job["spec"].get("hyperparameters", {}),
                out_dir,
                progress=progress,
                mlflow_tracking_uri=self.config.mlflow_tracking_uri,
                run_name=f"{job['project']}-job-{job['id']}",
                tags={
                    "controlplane.job": str(job["id"]),
                    "controlplane.project": job["project"],
                    "controlplane.claim": str(job["claim_seq"]),
                },
            )
            output = Path(result.output_path)
            digest = digest_path(output)
            if self.config.upload_outputs:
                self._upload(job, output)
            finished = self.client.finish(
                job,
                digest=digest,
                uri=output.resolve().as_uri(),
                metrics=result.metrics,
                mlflow_run_id=result.mlflow_run_id,
                parameters=result.parameters,
            )
        except LeaseLost as exc:
            return Outcome(job["id"], "lost", str(exc))
        except (InputMismatch, InputUnavailable) as exc:
            return self._fail(job, str(exc))
        except training_error_types() as exc:
            return self._fail(job, f"training failed: {getattr(exc, 'detail', exc)}")
        except ApiError as exc:
            return self._fail(job, f"the control plane refused the result: {exc.detail}")
        except Exception as exc:  # any crash of a trainer is the job's failure, reported
            return self._fail(job, f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(inputs_dir, ignore_errors=True)
        result_output = (finished.get("result") or {}).get("output")
        return Outcome(
            job["id"], "succeeded", result_output["ref"], result_output, dict(result.metrics)
        )

    def _fetch(self, job: Mapping[str, Any], directory: Path) -> Any:
        from controlplane.runners.trainers import TrainingInputs

        spec, project = job["spec"], job["project"]
        datasets = [self.client.fetch(project, item, directory) for item in spec["datasets"]]
        models = {
            role: self.client.fetch(project, spec[role], directory)
            for role in ("base_model", "reward_model", "policy", "reference")
            if spec.get(role)
        }
        return TrainingInputs(datasets=datasets, **models)

    def _upload(self, job: Mapping[str, Any], output: Path) -> None:
        try:
            self.client.upload(job["project"], output)
        except ApiError as exc:  # the output stays at its URI; other runners may lack it
            self.events.notice(f"job {job['id']}: output not uploaded ({exc.detail})")

    def _fail(self, job: Mapping[str, Any], reason: str) -> Outcome:
        try:
            self.client.fail(job, reason)
        except LeaseLost as exc:
            return Outcome(job["id"], "lost", f"{reason} (and the claim was lost: {exc})")
        return Outcome(job["id"], "failed", reason)


__all__ = ["ContractRefused", "Outcome", "Runner", "RunnerConfig", "RunnerEvents"]
