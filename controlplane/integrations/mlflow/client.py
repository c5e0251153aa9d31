"""The one place that builds an :class:`mlflow.MlflowClient`, imported lazily.

MLflow takes its HTTP retry policy only from environment variables (it re-reads them on every
request); its defaults retry a refused connection for about four minutes. The mirror works in a
background thread, so that would not block a promotion, but it would stall every later sync,
so the settings' shorter policy is handed to MLflow here (``os.environ.setdefault``: values the
operator set for MLflow win). Nothing here reads the environment for our own configuration.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from controlplane.config import Settings
from controlplane.errors import ControlPlaneError

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowUnavailable(ControlPlaneError):
    """MLflow could not be reached or refused a call (the ledger is unaffected)."""

    status = 503
    title = "MLflow unavailable"
    code = "mlflow-unavailable"


def redact(uri: str) -> str:
    """``uri`` without a password or token in its user part (safe for logs and the ledger)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def make_client(settings: Settings) -> MlflowClient:
    """A client on the configured tracking and registry URIs (imports MLflow: seconds)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_http_timeout_seconds))
    from mlflow import MlflowClient

    return MlflowClient(
        tracking_uri=settings.resolved_mlflow_tracking_uri,
        registry_uri=settings.resolved_mlflow_registry_uri,
    )


def ensure_experiment(client: MlflowClient, settings: Settings, name: str) -> str:
    """The id of experiment ``name``, created with its artifacts under the data directory.

    MLflow's own default artifact root is ``./mlruns`` in the working directory; experiments
    made here keep run artifacts in ``settings.resolved_mlflow_artifacts_dir`` instead.
    """
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = settings.resolved_mlflow_artifacts_dir / name
    location.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=location.as_uri()))


def error_code(exc: BaseException) -> str | None:
    """MLflow's error code of ``exc`` (``RESOURCE_DOES_NOT_EXIST``, ...), if it has one."""
    code: Any = getattr(exc, "error_code", None)
    return str(code) if code is not None else None
