"""Tests of the storage layer on SQLite and PostgreSQL."""
