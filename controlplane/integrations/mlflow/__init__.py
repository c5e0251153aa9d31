"""The MLflow mirror: reward models and policies in MLflow's model registry, aliases that follow
promotions, drift detection and repair, and the webhook receiver.

Importing this package does not import MLflow (that takes seconds); only a mirror that talks to
MLflow does, on first use.
"""

from controlplane.integrations.mlflow.mirror import MlflowMirror, affected_artifacts
from controlplane.integrations.mlflow.state import MANAGED_ALIASES, ArtifactKey, model_name

__all__ = ["MANAGED_ALIASES", "ArtifactKey", "MlflowMirror", "affected_artifacts", "model_name"]
