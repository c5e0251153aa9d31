"""Integrations with systems outside the control plane (MLflow).

They run after the ledger commits and never decide anything: the ledger and its projections
are the source of truth, and an integration only makes the outside world match them.
"""
