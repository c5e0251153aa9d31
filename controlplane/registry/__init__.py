"""Artifacts, immutable versions and typed lineage: the domain services of the registry."""
