"""``mlflow reconcile KIND/NAME`` works like every other KIND/NAME of the CLI (the default
project unless ``-p`` says otherwise), and MLflow's ``production`` alias follows a rollback
and its undo.

Found from outside: ``controlplane mlflow reconcile policy/pol`` failed with "a KIND/NAME
needs --project", although ``status``, ``rollback`` and ``show`` take the same reference in
the default project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controlplane.core import ControlPlane
from tests.cli.helpers import cli_env, fails, run_json
from tests.governance.helpers import World
from tests.integrations.test_mlflow_mirror import aliases, settle
from tests.utils.server import LiveServer

MODEL = "default.policy.helper"


def test_a_kind_name_is_in_the_default_project_and_aliases_follow_two_rollbacks(
    mcp: ControlPlane, mserver: LiveServer, mlflow: Any, tmp_path: Path
) -> None:
    world = World(mcp, project="default")
    versions = [world.register("policy", "helper") for _ in range(3)]
    for version in versions:
        world.to_production(version)
    settle(mcp)
    assert aliases(mlflow, MODEL) == {"production": 3}
    env = cli_env(mserver, tmp_path)

    mlflow.set_registered_model_alias(MODEL, "production", "1")  # behind our back
    found = run_json(["mlflow", "reconcile", "policy/helper", "--fix"], env)
    assert found["artifacts"] == 1 and found["in_sync"] is True
    assert [i["type"] for i in found["items"]] == ["alias_moved"]
    assert aliases(mlflow, MODEL) == {"production": 3}
    fails(["mlflow", "reconcile", "policy/helper", "-p", "elsewhere"], env, 4)

    # a rollback, then its undo (the previous production version is the one rolled back)
    for expected in (2, 3):
        run_json(["rollback", "policy/helper", "-r", f"back to {expected}"], env)
        settle(mcp)
        assert aliases(mlflow, MODEL) == {"production": expected}
    assert run_json(["mlflow", "reconcile", "policy/helper"], env)["in_sync"] is True
