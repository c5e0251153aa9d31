"""The README documents every setting, so operators never have to read config.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(name: str) -> None:
    assert f"CONTROLPLANE_{name.upper()}" in README, f"README lacks CONTROLPLANE_{name.upper()}"
