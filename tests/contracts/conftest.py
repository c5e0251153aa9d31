"""Fixtures of the data-contract tests (``cp`` and ``server`` come from tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane import clock
from controlplane.core import ControlPlane
from tests.contracts.helpers import Contracts
from tests.governance.helpers import PinnedClock, World, pinned_clock


@pytest.fixture
def clk() -> Iterator[PinnedClock]:
    """``controlplane.clock`` pinned at the real now (tokens issued at init stay valid) and
    restored afterwards."""
    with pinned_clock(clock.now()) as pinned:
        yield pinned


@pytest.fixture
def dc(cp: ControlPlane, clk: PinnedClock) -> Contracts:
    """The governance cast plus data owner ``olga`` in project ``gov``, clock pinned."""
    return Contracts(World(cp))
