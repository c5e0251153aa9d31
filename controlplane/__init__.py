"""controlplane: governance and audit control plane for preference-optimization pipelines."""

__version__ = "0.1.0"
