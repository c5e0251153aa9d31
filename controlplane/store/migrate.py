"""Run Alembic migrations from the application (``init``, ``serve``, tests)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from controlplane.config import Settings


def alembic_config(url: str, settings: Settings | None = None) -> Config:
    settings = settings or Settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(settings.migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, settings: Settings | None = None, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    command.upgrade(alembic_config(url, settings), revision)


def check(url: str, settings: Settings | None = None) -> None:
    """Raise if the models and the migrations disagree."""
    command.check(alembic_config(url, settings))
