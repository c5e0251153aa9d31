"""Fixtures of the webhook and alert tests: a live receiver and settings that point at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.config import Settings
from tests.utils.databases import make_settings
from tests.webhooks.receiver import Receiver

SECRET = "test-webhook-secret"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook.up()
    try:
        yield hook
    finally:
        hook.down()


def webhook_settings(db_url: str, tmp_path: Path, receiver: Receiver, **overrides: Any) -> Settings:
    """Webhooks on, to ``receiver``, with retry delays pinned small so the tests stay fast."""
    values: dict[str, Any] = {
        "webhook_urls": [receiver.url],
        "webhook_secret": SECRET,
        "webhook_retry_base_seconds": 0.05,
        "webhook_retry_max_seconds": 0.2,
        "webhook_poll_seconds": 0.05,
        "webhook_timeout_seconds": 2,
    }
    return make_settings(db_url, tmp_path, **{**values, **overrides})


@pytest.fixture
def settings(db_url: str, tmp_path: Path, receiver: Receiver) -> Settings:
    return webhook_settings(db_url, tmp_path, receiver)
