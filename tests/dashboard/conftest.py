"""One governed project served over real HTTP, shared by the dashboard tests.

Built once per session (on SQLite: the dashboard reads through the API, storage is tested
elsewhere) with the governance test helpers: a rubric and a preference dataset approved, a
reward model, a policy promoted to production with real signed sign-offs, a second policy
version whose offline evaluation regressed (so its promotion was refused), a third that
recovered, and people with
tokens, and a data contract (owner ``olga``) covering the dataset and rubric. Tests that
change something open their own request first.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from controlplane.core import BOOTSTRAP_ADMIN, ControlPlane
from controlplane.errors import ControlPlaneError
from tests.contracts.helpers import Contracts
from tests.governance.helpers import Person, World
from tests.utils.databases import database_url, make_settings
from tests.utils.server import LiveServer, live_server

_names = itertools.count()


@dataclass
class Scene:
    server: LiveServer
    world: World
    tokens: dict[str, str]
    policy: dict[str, Any]  # policy/assistant@1, in production
    regressed: dict[str, Any]  # policy/assistant@2, offline evaluation below the thresholds
    dataset: dict[str, Any]
    rubric: dict[str, Any]

    @property
    def project(self) -> str:
        return self.world.project

    def open_request(self) -> dict[str, Any]:
        """A fresh reward-model candidate with a good offline evaluation, and an open request
        to move it to staging (one approval needed)."""
        version = self.world.register(
            "reward_model", f"rm-{next(_names)}", lineage=[("trained_on", self.dataset)]
        )
        self.world.promote(version, "candidate")
        self.world.evaluation(version, "offline")
        return self.world.open(version, "staging")


def pem(person: Person) -> bytes:
    return person.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


@pytest.fixture(scope="session")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    directory: Path = tmp_path_factory.mktemp("dashboard")
    with database_url("sqlite", directory) as url:
        plane = ControlPlane(make_settings(url, directory))
        try:
            plane.init()
            world = World(plane)
            rubric = world.register("rubric", "helpfulness", metadata={"title": "Helpfulness"})
            dataset = world.register(
                "dataset",
                "prefs",
                lineage=[("follows_rubric", rubric)],
                metadata={"stats": {"rows": 3, "annotators": 2}},
            )
            world.approve_data(rubric)
            world.approve_data(dataset)
            contracts = Contracts(world)
            contracts.register(
                contracts.envelope(
                    world.version(dataset), world.version(rubric), contract_id="prefs-dpo"
                )
            )
            reward = world.register("reward_model", "rm", lineage=[("trained_on", dataset)])
            lineage = [("trained_on", dataset), ("derived_from", reward)]
            policy = world.register("policy", "assistant", lineage=lineage)
            world.to_production(policy)
            regressed = world.register("policy", "assistant", lineage=lineage)
            world.promote(regressed, "candidate")
            world.evaluation(
                regressed, "offline", {"win_rate": 0.49, "safety_violation_rate": 0.03}
            )
            try:
                world.open(regressed, "staging")
            except ControlPlaneError:
                pass  # refused for missing evidence, and recorded: a "recent refusal"
            else:
                raise AssertionError("the regressed policy should have been refused")
            recovered = world.register("policy", "assistant", lineage=lineage)
            world.evaluation(
                recovered, "offline", {"win_rate": 0.58, "safety_violation_rate": 0.006}
            )
            tokens = {
                who: plane.identity.issue_token(BOOTSTRAP_ADMIN, who, "dashboard").token
                for who in ("alice", "carol", "eng")
            }
            tokens["admin"] = plane.settings.admin_token_file.read_text().strip()
            with live_server(plane) as server:
                yield Scene(
                    server,
                    world,
                    tokens,
                    world.version(policy),
                    world.version(regressed),
                    dataset,
                    rubric,
                )
        finally:
            plane.close()
