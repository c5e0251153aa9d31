"""``controlplane demo``: the whole governance loop, for real, on a fresh data directory.

:mod:`controlplane.demo.workspace` owns the demo's data directory and its settings;
:mod:`controlplane.demo.scenario` plays the story over HTTP as its people would. The command
line (``controlplane/cli/demo_cmds.py``) hosts the API for it and prints the narration.
"""

from __future__ import annotations

from controlplane.demo.scenario import (
    INSTALL_HINT,
    DemoFailed,
    Narrator,
    Scenario,
    Step,
    missing_training_libraries,
)
from controlplane.demo.workspace import DEFAULT_DIR, DemoDir, DirState

__all__ = [
    "DEFAULT_DIR",
    "INSTALL_HINT",
    "DemoDir",
    "DemoFailed",
    "DirState",
    "Narrator",
    "Scenario",
    "Step",
    "missing_training_libraries",
]
