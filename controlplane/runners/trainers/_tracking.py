"""Record one training run in MLflow: parameters, metrics, tags and the output files.

Uses an explicit ``MlflowClient`` bound to the given tracking URI, never the ``mlflow``
module's global active run or tracking URI, so successive calls with different stores (one
per test, one per runner) cannot leak into each other.

A SQLite tracking store's experiments would by default keep artifacts in ``./mlruns`` of
whatever directory the process happens to run in; an experiment created here keeps them next
to the database file instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from controlplane import clock
from controlplane.runners.trainers._data import TrainingError

PARAM_LIMIT = 6000  # MLflow refuses longer parameter values


def _millis() -> int:
    return int(clock.now().timestamp() * 1000)


def artifact_location_for(tracking_uri: str) -> str | None:
    """``<database dir>/mlflow-artifacts`` for a SQLite file store, else the server's default."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / "mlflow-artifacts").as_uri()


def log_run(
    tracking_uri: str,
    *,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    parameters: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifact: Path,
    artifact_path: str,
) -> str:
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise TrainingError(
            "MLflow is not installed (mlflow-skinny): cannot record the training run"
        ) from exc
    client = MlflowClient(tracking_uri=tracking_uri)
    params = dict(parameters)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_location_for(tracking_uri)
            )
        else:
            experiment_id = found.experiment_id
        run = client.create_run(
            experiment_id,
            start_time=_millis(),
            tags={str(k): str(v) for k, v in tags.items()},
            run_name=run_name,
        )
        run_id = run.info.run_id
        try:
            now = _millis()
            client.log_batch(
                run_id,
                metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()],
                params=[Param(name, str(value)[:PARAM_LIMIT]) for name, value in params.items()],
                tags=[RunTag("controlplane.output", artifact_path)],
            )
            if artifact.is_dir():
                client.log_artifacts(run_id, str(artifact), artifact_path=artifact_path)
            else:
                client.log_artifact(run_id, str(artifact), artifact_path=artifact_path)
        except (MlflowException, OSError):
            # A half-recorded run must not look like a finished one.
            client.set_terminated(run_id, status="FAILED", end_time=_millis())
            raise
        client.set_terminated(run_id, status="FINISHED", end_time=_millis())
    except (MlflowException, OSError) as exc:
        raise TrainingError(f"could not record the run in MLflow at {tracking_uri}: {exc}") from exc
    return run_id
