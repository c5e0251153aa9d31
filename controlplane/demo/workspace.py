"""The demo's data directory: what it holds, whether it may be (re)used, and its settings.

A demo directory is a complete control-plane data directory (SQLite database, checkpoint
signing key, pseudonym secret, admin token, MLflow store, OpenLineage events, runner work
dir) plus a ``demo/`` folder with what the demo's people keep on their own machines: their
tokens, their private sign-off keys, the contract files the data owner signed, and the base
model the engineer built. ``demo/state.json`` marks the directory as the demo's: ``running``
while the scenario runs, ``finished`` (with ``demo/summary.json``) once it completed.

The demo never touches another instance's data: its settings name every location inside the
directory explicitly, so ``CONTROLPLANE_DATABASE_URL``, ``MLFLOW_TRACKING_URI`` or
``CONTROLPLANE_OPENLINEAGE_URL`` set for a production instance in the same shell are ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from controlplane import clock
from controlplane.config import Settings
from controlplane.errors import Conflict

DEFAULT_DIR = Path(".controlplane-demo")
MARKER_DIR = "demo"


class DirState(Enum):
    """What a would-be demo directory holds."""

    EMPTY = "empty"
    """Missing or empty: the demo may run."""
    FINISHED = "finished"
    """A demo that ran to the end: it can be served, or re-run with ``--force``."""
    UNFINISHED = "unfinished"
    """A demo that was interrupted or failed: the next run starts it over."""
    FOREIGN = "foreign"
    """Something else (perhaps a real instance's data): never reused, never wiped."""


@dataclass(frozen=True)
class DemoDir:
    """Paths inside one demo directory."""

    root: Path

    @classmethod
    def at(cls, path: Path) -> DemoDir:
        return cls(path.expanduser().resolve())

    @property
    def demo(self) -> Path:
        return self.root / MARKER_DIR

    @property
    def state_file(self) -> Path:
        return self.demo / "state.json"

    @property
    def summary_file(self) -> Path:
        return self.demo / "summary.json"

    @property
    def tokens_file(self) -> Path:
        return self.demo / "tokens.json"

    @property
    def keys_dir(self) -> Path:
        return self.demo / "keys"

    @property
    def env_dir(self) -> Path:
        return self.demo / "env"

    def home(self, person: str) -> Path:
        """The working directory of one of the demo's people ("their machine")."""
        return self.demo / "home" / person

    def person_keys(self, person: str) -> Path:
        return self.keys_dir / person

    # -- state ---------------------------------------------------------------------------------

    def state(self) -> DirState:
        if not self.root.exists() or (self.root.is_dir() and not any(self.root.iterdir())):
            return DirState.EMPTY
        if not self.root.is_dir():
            return DirState.FOREIGN
        try:
            marker = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return DirState.FOREIGN
        if not isinstance(marker, dict) or marker.get("format") != "controlplane-demo/v1":
            return DirState.FOREIGN
        if marker.get("state") == "finished" and self.summary_file.is_file():
            return DirState.FINISHED
        return DirState.UNFINISHED

    def summary(self) -> dict[str, Any]:
        """The summary a finished demo left behind."""
        data = json.loads(self.summary_file.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.summary_file} is not a demo summary")
        return data

    def prepare(self, force: bool) -> None:
        """Make the directory ready for a fresh run: empty an unfinished demo's (a finished
        one's only with ``force``); refuse anything else.

        Only a directory marked as a demo's is ever emptied.
        """
        state = self.state()
        if state is DirState.FOREIGN:
            raise Conflict(
                f"{self.root} is not empty and is not a demo directory; the demo never reuses "
                "or deletes other data: choose another --data-dir"
            )
        if state is DirState.FINISHED and not force:
            raise Conflict(f"{self.root} already holds a finished demo (use --force to redo it)")
        # An unfinished demo (interrupted, or a step failed) is ours and of no further use:
        # it is started over without asking, so `make run` recovers by itself.
        if state is not DirState.EMPTY:
            for child in self.root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        self.demo.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._mark("running", started_at=clock.now().isoformat())

    def finish(self, summary: dict[str, Any]) -> None:
        write_private(self.summary_file, json.dumps(summary, indent=2, default=str) + "\n")
        marker = json.loads(self.state_file.read_text())
        self._mark(
            "finished", started_at=marker.get("started_at"), finished_at=summary["finished_at"]
        )

    def _mark(self, state: str, **fields: Any) -> None:
        data = {"format": "controlplane-demo/v1", "state": state, **fields}
        write_private(self.state_file, json.dumps(data, indent=2) + "\n")

    # -- settings ------------------------------------------------------------------------------

    def settings(
        self, host: str = "127.0.0.1", port: int = 8600, dashboard_port: int = 8601
    ) -> Settings:
        """Settings that keep every byte of the demo inside this directory.

        Every field starts from its default, not from the environment (an explicit value wins
        over the environment), so a production instance configured in the same shell, with
        its database URL, MLflow or OpenLineage endpoints or witness directory, is never
        read or written; then the demo's own locations are set.
        """
        values: dict[str, Any] = {}
        for name, info in Settings.model_fields.items():
            if info.is_required():  # no default to fall back on: the environment decides
                continue
            values[_input_key(name, info.validation_alias)] = info.get_default(
                call_default_factory=True
            )
        values.update(
            data_dir=self.root,
            host=host,
            port=port,
            dashboard_port=dashboard_port,
            url=f"http://{host}:{port}",
            verify_state_file=self.demo / "verify-state.json",
            keys_dir=self.keys_dir,
        )
        return Settings(**values)


def _input_key(name: str, alias: Any) -> str:
    """The keyword that sets field ``name`` (its alias when it has one, else its name)."""
    if alias is None:
        return name
    if isinstance(alias, str):
        return alias
    choices = [c for c in getattr(alias, "choices", []) if isinstance(c, str)]
    return name if name in choices or not choices else choices[0]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (tokens, keys' companions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    tmp.replace(path)


__all__ = ["DEFAULT_DIR", "DemoDir", "DirState", "write_private"]
