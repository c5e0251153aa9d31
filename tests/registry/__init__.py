"""Tests of the artifact registry on SQLite and PostgreSQL."""
