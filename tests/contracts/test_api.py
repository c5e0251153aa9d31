"""Data contracts and annotator erasure over real HTTP, on SQLite and PostgreSQL: who may
register, read, revoke and erase, what a refusal looks like (problem+json, and in the ledger).
"""

from __future__ import annotations

from typing import Any

import httpx

from controlplane.core import BOOTSTRAP_ADMIN
from tests.api.helpers import all_entries, assert_problem
from tests.cli.helpers import PREFERENCES
from tests.contracts.helpers import PROJECT, Contracts, altered
from tests.utils.server import LiveServer


def _as(server: LiveServer, dc: Contracts, principal: str) -> httpx.Client:
    return server.client(dc.cp.identity.issue_token(BOOTSTRAP_ADMIN, principal).token)


def test_contracts_over_http(server: LiveServer, dc: Contracts) -> None:
    data = dc.approved()
    envelope = dc.envelope(data)
    dc.world.person("runner-1", "runner", key=False)
    path = f"/v1/projects/{PROJECT}/contracts"
    with (
        _as(server, dc, "olga") as olga,
        _as(server, dc, "eng") as eng,
        _as(server, dc, "runner-1") as runner,
        server.admin() as admin,
    ):
        denied = assert_problem(eng.post(path, json={"envelope": envelope}), 403)
        assert "may not register contracts" in denied["detail"]
        assert all_entries(admin, action="access.denied")[-1]["actor"] == "eng"

        forged = assert_problem(
            olga.post(path, json={"envelope": altered(envelope, purpose="ppo")}), 403
        )
        assert "does not verify" in forged["detail"] and forged["contract_id"] == "c-1"
        refused = all_entries(admin, action="contract.refused")
        assert [e["payload"]["reason"] for e in refused] == [forged["detail"]]

        bad = assert_problem(olga.post(path, json={"envelope": {"payload": "x"}}), 422)
        assert "not a DSSE envelope" in bad["detail"]
        assert_problem(olga.post(path, json={"envelope": envelope, "extra": 1}), 422)

        created = olga.post(path, json={"envelope": envelope})
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        assert body["id"] == "c-1" and body["state"] == "active" and body["envelope"] == envelope
        assert olga.post(path, json={"envelope": envelope}).status_code == 200  # retry

        listed = runner.get(path, params={"state": "active"})
        assert listed.status_code == 200 and listed.json()["count"] == 1
        assert "envelope" not in listed.json()["data"][0]
        shown = runner.get("/v1/contracts/c-1")
        assert shown.status_code == 200 and shown.json()["envelope"] == envelope
        assert_problem(runner.get("/v1/contracts/nope"), 404)
        assert_problem(runner.get(path, params={"state": "lost"}), 422)

        assert_problem(runner.post("/v1/contracts/c-1/revoke", json={"reason": "x"}), 403)
        revoked = olga.post("/v1/contracts/c-1/revoke", json={"reason": "consent withdrawn"})
        assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
        assert_problem(admin.post("/v1/contracts/c-1/revoke", json={"reason": "again"}), 409)
        assert runner.get(path, params={"state": "revoked"}).json()["count"] == 1

        verified = admin.get("/v1/ledger/entries", params={"action": "contract.registered"})
        assert verified.json()["data"][0]["payload"]["envelope"] == envelope


def test_erasure_over_http_is_a_data_owner_duty(server: LiveServer, dc: Contracts) -> None:
    dc.cp.registry.register_dataset(dc.world.trainer.id, PROJECT, "prefs", PREFERENCES.read_bytes())
    path = f"/v1/projects/{PROJECT}/annotators/erasures"
    with _as(server, dc, "eng") as eng, _as(server, dc, "olga") as olga, server.admin() as admin:
        assert_problem(eng.post(path, json={"annotator": "ann.lee@example.com"}), 403)
        denial = all_entries(admin, action="access.denied")[-1]
        assert "ann.lee" not in str(denial)
        assert_problem(olga.post(path, json={}), 422)
        done = olga.post(path, json={"annotator": "ann.lee@example.com"})
        assert done.status_code == 200, done.text
        assert done.json()["mappings_erased"] == 1
        by_admin = admin.post(path, json={"annotator": "c.ramos@example.com"})
        assert by_admin.status_code == 200 and by_admin.json()["mappings_erased"] == 1
        entries = all_entries(admin, action="annotator.erased")
        assert [e["actor"] for e in entries] == ["olga", BOOTSTRAP_ADMIN]
        assert "ann.lee" not in str(entries) and "ramos" not in str(entries)
