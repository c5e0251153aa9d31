"""A ledger's origin (its name in signed checkpoints) is chosen once and kept for life."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.core import ControlPlane
from controlplane.errors import Conflict
from tests.utils.databases import make_settings


def _init(url: str, directory: Path, origin: str | None = None) -> str:
    plane = ControlPlane(make_settings(url, directory, origin=origin))
    try:
        plane.init()
        return plane.signer.origin
    finally:
        plane.close()


def test_default_origins_differ_between_ledgers_and_persist(tmp_path: Path) -> None:
    first = _init(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a")
    second = _init(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "b")
    assert first.startswith("controlplane.local/") and second.startswith("controlplane.local/")
    assert first != second
    assert _init(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "a") == first


def test_an_explicit_origin_is_kept_and_cannot_change(db_url: str, tmp_path: Path) -> None:
    assert _init(db_url, tmp_path, origin="ledger.example.com/rlhf") == "ledger.example.com/rlhf"
    assert _init(db_url, tmp_path) == "ledger.example.com/rlhf"
    with pytest.raises(Conflict, match="keeps its origin"):
        _init(db_url, tmp_path, origin="other.example.com/log")
