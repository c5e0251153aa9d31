"""Data contracts from the command line against a real server (SQLite and PostgreSQL): the data
owner creates, signs (with a key kept on their machine), registers, shows, lists, verifies and
revokes a contract; ``controlplane verify`` and an exported bundle re-check the contract
envelope offline, and a forged or unapproved one is named by seq; the owner erases an annotator.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from controlplane.client.verify import verify_bundle
from controlplane.contracts.audit import ContractAuditor
from controlplane.core import BOOTSTRAP_ADMIN
from controlplane.ledger.verify import VerificationReport
from tests.cli.helpers import PREFERENCES, cli_env, fails, invoke, one_line_error, run_json
from tests.contracts.helpers import PROJECT, Contracts
from tests.utils.server import LiveServer


def _env(server: LiveServer, dc: Contracts, tmp_path: Path, who: str) -> dict[str, str | None]:
    home = tmp_path / who
    return cli_env(
        server,
        home,
        CONTROLPLANE_TOKEN=dc.cp.identity.issue_token(BOOTSTRAP_ADMIN, who).token,
        CONTROLPLANE_KEYS_DIR=str(home / "keys"),
        CONTROLPLANE_PROJECT=PROJECT,
    )


def test_contract_lifecycle_from_the_command_line(
    server: LiveServer, dc: Contracts, tmp_path: Path
) -> None:
    version, _ = dc.cp.registry.register_dataset(
        dc.world.trainer.id, PROJECT, "prefs", PREFERENCES.read_bytes()
    )
    dc.world.approve_data(version)
    rubric = dc.approved("rubric", "helpfulness")
    olga = _env(server, dc, tmp_path, "olga")
    eng = _env(server, dc, tmp_path, "eng")
    statement_file, envelope_file = tmp_path / "c.json", tmp_path / "c.dsse.json"

    key = run_json(["keys", "generate", "--name", "olga-laptop"], olga)
    created = run_json(
        [
            "contract", "create", "--dataset", "prefs@1", "--rubric", "helpfulness@1",
            "--purpose", "reward_model", "--consumer", "runner-1", "--id", "c-cli",
            "--days", "30", "--retention", "12m", "--terms", "research only",
            "-o", statement_file,
        ],
        olga,
    )  # fmt: skip
    predicate = created["statement"]["predicate"]
    assert predicate["owner"] == "olga" and predicate["rubric"] == "gov/rubric/helpfulness@1"
    assert predicate["retention"] == {"value": 12, "unit": "months"}
    signed = run_json(["contract", "sign", statement_file, "-o", envelope_file], olga)
    assert signed["envelope"]["signatures"][0]["keyid"] == key["key_id"]
    # an engineer may not register it, the owner may
    assert "may not register contracts" in one_line_error(
        fails(["contract", "register", envelope_file], eng, 3)
    )
    registered = run_json(["contract", "register", envelope_file], olga)
    assert registered["id"] == "c-cli" and registered["state"] == "active"
    assert registered["key_id"] == key["key_id"]

    shown = invoke(["contract", "show", "c-cli"], eng)
    assert shown.exit_code == 0 and "covers   gov/dataset/prefs@1" in shown.stdout
    listed = run_json(["contract", "list"], eng)
    assert [c["id"] for c in listed["data"]] == ["c-cli"]
    assert run_json(["contract", "verify", "c-cli"], eng)["ok"]
    offline = run_json(
        ["contract", "verify", envelope_file, "--public-key", key["public_key"]], tmp_env(tmp_path)
    )
    assert offline["ok"] and offline["mode"] == "offline"
    wrong_key = dc.owner.key.public_key().public_bytes_raw()
    assert fails(
        ["contract", "verify", envelope_file, "--public-key", base64.b64encode(wrong_key).decode()],
        tmp_env(tmp_path),
        1,
    )

    envelope = json.loads(envelope_file.read_text())
    decision = dc.check(envelope, version["digest"], rubric["digest"], purpose="reward_model")
    assert decision.accepted and decision.contract_id == "c-cli"

    # the owner erases an annotator; verification still passes and checks the contract
    erased = run_json(["annotator", "erase", "--annotator", "ann.lee@example.com"], olga)
    assert erased["mappings_erased"] == 1
    report = run_json(["verify"], olga)
    assert report["ok"] and report["contracts_verified"] == 1, report
    bundle_file = tmp_path / "audit.json"
    run_json(["export", "-o", bundle_file], cli_env(server, tmp_path / "auditor"))
    assert (
        run_json(["verify", "--bundle", bundle_file], tmp_env(tmp_path))["contracts_verified"] == 1
    )

    revoked = run_json(["contract", "revoke", "c-cli", "-r", "consent withdrawn"], olga)
    assert revoked["state"] == "revoked"
    failed = fails(["contract", "verify", "c-cli"], eng, 1)
    assert "revoked" in failed.stderr
    _audit_bundle(json.loads(bundle_file.read_text()))


def tmp_env(tmp_path: Path) -> dict[str, str | None]:
    """A machine with no server and no token: offline checks only."""
    return cli_env(None, tmp_path / "offline", CONTROLPLANE_URL="http://127.0.0.1:9")


def _audit_bundle(bundle: dict[str, Any]) -> None:
    """Offline, from the exported bundle: a forged contract envelope is named by seq; and the
    contract auditor alone (as if a forger had re-hashed the chain) catches a contract over
    data that was not approved at the time."""
    entry = next(e for e in bundle["entries"] if e["action"] == "contract.registered")
    seq = entry["seq"]
    tampered = copy.deepcopy(bundle)
    victim = next(e for e in tampered["entries"] if e["seq"] == seq)
    statement = json.loads(base64.b64decode(victim["payload"]["envelope"]["payload"]))
    statement["predicate"]["consumers"]["principals"].append("mallory")
    victim["payload"]["envelope"]["payload"] = base64.b64encode(
        json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    ).decode()
    report = verify_bundle(tampered)
    assert not report.ok and report.first_bad_seq == seq
    assert any(p.startswith(f"seq {seq}: contract c-cli does not verify") for p in report.problems)
    assert report.contracts_verified == 0

    auditor, alone = ContractAuditor(), VerificationReport()
    for e in bundle["entries"]:
        if e["action"] == "stage.changed" and e["subject"]["kind"] == "dataset":
            continue  # the dataset never reached approved
        auditor(e, alone)
    assert alone.first_bad_seq == seq
    assert "covers dataset/prefs@1" in alone.problems[0] and "registered" in alone.problems[0]
