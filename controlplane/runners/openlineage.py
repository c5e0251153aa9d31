"""OpenLineage run events for jobs (``openlineage-python``), emitted after each commit.

One OpenLineage *run* per claim of a job (run id: a UUID5 of the ledger origin, job id and
claim seq, so the same claim always has the same run id): ``START`` when a runner claims it,
``COMPLETE`` with the output dataset when it finishes, ``FAIL`` with the reason when it fails,
``ABORT`` when the lease is released, expires or the job is cancelled. Job namespace and
dataset namespace are ``openlineage_namespace``; datasets are named
``<project>/<kind>/<name>@<version>`` and carry their digest as the dataset version facet.

Transport: files under ``openlineage_dir`` (default ``DATA_DIR/lineage``, one JSON file per
event) unless ``openlineage_url`` is set, then HTTP (Marquez's ``/api/v1/lineage``). HTTP
events are sent by a background thread so an unreachable Marquez never slows the API; a
failed emit is logged, never raised: the ledger, not this feed, is the record.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane import __version__
from controlplane.config import Settings
from controlplane.runners.spec import inputs_of

log = logging.getLogger("controlplane.openlineage")
PRODUCER = f"https://controlplane.dev/controlplane/{__version__}"
EVENT_TYPES = ("START", "COMPLETE", "FAIL", "ABORT")


def run_id(origin: str, job_id: int, claim_seq: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{origin}/jobs/{job_id}/claims/{claim_seq}"))


class LineageEmitter:
    """Builds and sends run events; created once per control plane."""

    def __init__(self, settings: Settings, origin: str) -> None:
        self.enabled = settings.openlineage_enabled
        self.namespace = settings.openlineage_namespace
        self.url = settings.openlineage_url
        self.directory = settings.openlineage_dir or settings.data_dir / "lineage"
        self.origin = origin
        self._client: Any = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._worker: threading.Thread | None = None

    # -- building ------------------------------------------------------------------------------

    def event(
        self,
        event_type: str,
        job: Mapping[str, Any],
        *,
        claim_seq: int,
        event_time: str,
        outputs: Sequence[Mapping[str, Any]] = (),
        error: str | None = None,
    ) -> Any:
        """The RunEvent for ``job`` (a job as the service returns it)."""
        from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent
        from openlineage.client.event_v2 import RunState as State
        from openlineage.client.facet_v2 import (
            dataset_version_dataset,
            error_message_run,
            job_type_job,
        )

        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown OpenLineage event type {event_type!r}")
        project = job["project"]

        def facets(digest: str) -> dict[str, Any]:
            return {"version": dataset_version_dataset.DatasetVersionDatasetFacet(digest)}

        inputs = [
            InputDataset(self.namespace, f"{project}/{item['ref']}", facets=facets(item["digest"]))
            for _role, item in inputs_of(job["spec"])
        ]
        outs = [
            OutputDataset(self.namespace, f"{project}/{item['ref']}", facets=facets(item["digest"]))
            for item in outputs
        ]
        run_facets: dict[str, Any] = {}
        if error:
            run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=error[:2000], programmingLanguage="python"
            )
        return RunEvent(
            eventType=getattr(State, event_type),
            eventTime=event_time,
            run=Run(runId=run_id(self.origin, job["id"], claim_seq), facets=run_facets),
            job=Job(
                namespace=self.namespace,
                name=f"{project}.job-{job['id']}.{job['trainer']}",
                facets={
                    "jobType": job_type_job.JobTypeJobFacet(
                        processingType="BATCH", integration="CONTROLPLANE", jobType=job["trainer"]
                    )
                },
            ),
            inputs=inputs,
            outputs=outs,
            producer=PRODUCER,
        )

    # -- sending -------------------------------------------------------------------------------

    def emit(self, event_type: str, job: Mapping[str, Any], **kwargs: Any) -> None:
        """Build and send one event; never raises."""
        if not self.enabled:
            return
        try:
            event = self.event(event_type, job, **kwargs)
        except Exception:
            log.exception("could not build the OpenLineage %s event of job %s", event_type, job)
            return
        if self.url is None:
            self._send(event)
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._drain, name="openlineage", daemon=True)
                self._worker.start()
        self._queue.put(event)

    def flush(self) -> None:
        """Wait until every queued HTTP event was sent (or failed)."""
        if self._worker is not None:
            self._queue.join()

    def _drain(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._send(event)
            finally:
                self._queue.task_done()

    def _send(self, event: Any) -> None:
        try:
            self._transport_client().emit(event)
        except Exception as exc:
            log.warning("OpenLineage event not delivered: %s", exc)

    def _transport_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from openlineage.client import OpenLineageClient

                if self.url is not None:
                    from openlineage.client.transport.http import HttpConfig, HttpTransport

                    transport: Any = HttpTransport(
                        HttpConfig(url=self.url, timeout=5.0, retry={"total": 2})
                    )
                else:
                    from openlineage.client.transport.file import FileConfig, FileTransport

                    Path(self.directory).mkdir(parents=True, exist_ok=True)
                    # debug_mode names each file by time, job name and event type, so two
                    # events written in the same microsecond cannot overwrite each other
                    transport = FileTransport(
                        FileConfig(log_file_path=str(Path(self.directory) / "ol"), debug_mode=True)
                    )
                self._client = OpenLineageClient(transport=transport)
            return self._client


__all__ = ["EVENT_TYPES", "LineageEmitter", "run_id"]
