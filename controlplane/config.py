"""The one settings object (environment prefix ``CONTROLPLANE_``); no other module reads the
environment on its own.

The embedded default keeps everything under one data directory: the SQLite database, the
server's checkpoint signing key, the pseudonym secret and the bootstrap admin token.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
"""Checkout root; holds ``migrations/`` and ``policies/`` next to the package."""

DEFAULT_PROJECT = "default"


def _xdg(variable: str, fallback: str) -> Path:
    """``$XDG_*/controlplane`` per the XDG base directory spec."""
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "controlplane"


class Settings(BaseSettings):
    """Every tunable of the control plane. Read once, passed explicitly."""

    model_config = SettingsConfigDict(env_prefix="CONTROLPLANE_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".controlplane"),
        description="Directory for the embedded database, keys and secrets.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; defaults to SQLite in the data directory. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db",
    )
    origin: str | None = Field(
        default=None,
        description="Checkpoint origin line: names this ledger in its signed checkpoints. "
        "Default: chosen once at the first init (controlplane.local/<random>) and kept in the "
        "ledger, so two ledgers never share a name.",
    )
    signing_key_file: Path | None = Field(
        default=None, description="Ed25519 PEM key that signs checkpoints (shared by replicas)."
    )
    pseudonym_secret_file: Path | None = Field(
        default=None,
        description="Secret for HMAC-SHA-256 annotator pseudonyms; never written to the ledger.",
    )
    pseudonym_secret: str | None = Field(
        default=None, description="The pseudonym secret itself (overrides the file)."
    )
    policies_dir: Path = Field(
        default=REPO_ROOT / "policies", description="casbin model and default policy."
    )
    migrations_dir: Path = Field(default=REPO_ROOT / "migrations")
    host: str = "127.0.0.1"
    port: int = 8600
    dashboard_port: int = Field(
        default=8601, description="Where `serve` starts the dashboard (beside the API)."
    )
    url: str = Field(
        default="http://127.0.0.1:8600", description="API address used by client commands."
    )
    token: str | None = Field(default=None, description="Bearer token used by client commands.")
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, description="Largest request body the API accepts."
    )
    token_ttl_days: int = Field(default=365, description="Default lifetime of new API tokens.")
    api_concurrency: int = Field(
        default=16,
        ge=1,
        le=512,
        description="Requests one API process handles at once (more wait in order); its "
        "database pool holds up to twice this many connections plus 8.",
    )
    verify_state_file: Path = Field(
        default_factory=lambda: _xdg("XDG_STATE_HOME", ".local/state") / "verify-state.json",
        description="Where `controlplane verify` keeps the last verified checkpoint.",
    )
    keys_dir: Path = Field(
        default_factory=lambda: _xdg("XDG_CONFIG_HOME", ".config") / "keys",
        description="Where the CLI keeps this user's private sign-off keys (mode 0600).",
    )
    job_lease_seconds: int = Field(
        default=120,
        ge=5,
        le=86_400,
        description="Default lease of a claimed job; runners heartbeat at a third of it.",
    )
    openlineage_url: str | None = Field(
        default=None,
        description="OpenLineage HTTP endpoint base (e.g. Marquez http://marquez:5000); "
        "default: events are written as files under openlineage_dir.",
    )
    openlineage_dir: Path | None = Field(
        default=None, description="Directory of OpenLineage event files (default DATA_DIR/lineage)."
    )
    openlineage_namespace: str = Field(
        default="controlplane", description="OpenLineage namespace of job runs and datasets."
    )
    openlineage_enabled: bool = Field(default=True, description="Emit OpenLineage run events.")
    runner_work_dir: Path | None = Field(
        default=None,
        description="Where `controlplane runner start` keeps inputs and outputs of its jobs "
        "(default DATA_DIR/runner).",
    )

    # -- operations (controlplane/ops): metrics, logs, witness ---------------------------------
    metrics_enabled: bool = Field(default=True, description="Serve /metrics (Prometheus).")
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token a scraper must send to /metrics (not an API token); unset: "
        "/metrics answers loopback clients only.",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="Server log lines: one JSON object each (json) or plain text for "
        "development (text).",
    )
    log_level: str = Field(default="INFO", description="Server log level.")
    witness_dir: Path | None = Field(
        default=None,
        description="Directory (one per ledger) where every new signed checkpoint is written "
        "once, as <size>.checkpoint, for `controlplane verify --witness`; it should be storage "
        "the server cannot rewrite. Unset: no witnessing.",
    )
    integrity_check_interval_seconds: int = Field(
        default=0,
        ge=0,
        description="The API server checks the database's integrity (chain, checkpoints, "
        "Merkle nodes) every N seconds and counts failures in /metrics; 0: off.",
    )

    # -- MLflow mirror (controlplane/integrations/mlflow) --------------------------------------
    mlflow_enabled: bool = Field(
        default=True,
        description="Mirror reward models and policies into MLflow's model registry (aliases "
        "follow promotions). Off: nothing touches MLflow.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CONTROLPLANE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI", "mlflow_tracking_uri"
        ),
        description="MLflow tracking URI (MLFLOW_TRACKING_URI is honoured too); default: "
        "sqlite:///DATA_DIR/mlflow/mlflow.db, a database of its own.",
    )
    mlflow_registry_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "CONTROLPLANE_MLFLOW_REGISTRY_URI", "MLFLOW_REGISTRY_URI", "mlflow_registry_uri"
        ),
        description="MLflow model registry URI; default: the tracking URI.",
    )
    mlflow_artifacts_dir: Path | None = Field(
        default=None, description="Artifact root of MLflow experiments (default DATA_DIR/mlflow)."
    )
    mlflow_sync_interval_seconds: int = Field(
        default=300,
        ge=0,
        description="The API server's catch-up sync with MLflow: at start, then every N "
        "seconds; 0 turns it off (post-commit mirroring still runs).",
    )
    mlflow_webhook_secret: str | None = Field(
        default=None,
        description="HMAC secret of MLflow webhooks sent to /v1/integrations/mlflow/webhook; "
        "unset: every delivery is refused.",
    )
    mlflow_webhook_tolerance_seconds: int = Field(
        default=300, ge=1, description="How old (or early) a webhook timestamp may be."
    )
    mlflow_http_retries: int = Field(
        default=2, ge=0, description="Retries of one MLflow REST call (MLflow's own default: 7)."
    )
    mlflow_http_timeout_seconds: int = Field(
        default=10, ge=1, description="Timeout of one MLflow REST call."
    )

    # -- outgoing webhooks (controlplane/webhooks) and alert rules ----------------------------
    webhook_urls: list[str] = Field(
        default_factory=list,
        description='Receivers of governance events (JSON list, e.g. ["https://hooks/x"]); '
        "empty: no webhooks. Each gets every matching ledger entry, at least once.",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="HMAC-SHA-256 key of X-Controlplane-Signature (required with webhook_urls).",
    )
    webhook_events: list[str] = Field(
        default_factory=lambda: [
            "promotion.*",
            "stage.changed",
            "signoff.*",
            "contract.*",
            "job.*",
            "access.denied",
            "alert.*",
        ],
        description="Ledger actions delivered (shell-style patterns).",
    )
    webhook_retry_base_seconds: float = Field(
        default=2.0, gt=0, description="First retry delay; doubles per attempt (with jitter)."
    )
    webhook_retry_max_seconds: float = Field(
        default=600.0, gt=0, description="Longest delay between two attempts."
    )
    webhook_max_age_seconds: float = Field(
        default=3 * 86_400,
        gt=0,
        description="A delivery still failing this long after it was queued is marked failed "
        "(kept in webhook_deliveries and logged) instead of retried.",
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one POST.")
    webhook_lease_seconds: int = Field(
        default=60, ge=1, description="How long a replica holds a claimed delivery."
    )
    webhook_poll_seconds: float = Field(
        default=5.0, gt=0, description="The worker's idle wait between outbox rounds."
    )

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow' / 'mlflow.db').resolve()}"

    @property
    def resolved_mlflow_registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.resolved_mlflow_tracking_uri

    @property
    def resolved_mlflow_artifacts_dir(self) -> Path:
        return (self.mlflow_artifacts_dir or self.data_dir / "mlflow" / "artifacts").resolve()

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'controlplane.db').resolve()}"

    @property
    def resolved_signing_key_file(self) -> Path:
        return self.signing_key_file or self.data_dir / "keys" / "checkpoint-signing.pem"

    @property
    def resolved_pseudonym_secret_file(self) -> Path:
        return self.pseudonym_secret_file or self.data_dir / "keys" / "pseudonym.secret"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    def pseudonym_key(self) -> bytes:
        """The HMAC key for annotator pseudonyms, created on first use in the data directory."""
        if self.pseudonym_secret:
            return self.pseudonym_secret.encode()
        path = self.resolved_pseudonym_secret_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
