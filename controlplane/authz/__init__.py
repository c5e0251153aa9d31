"""Principals, bearer tokens and casbin authorization with project domains."""
