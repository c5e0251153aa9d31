"""Claims under data contracts: every refusal is a clear 403 for the runner and one
``contract.rejected`` entry for the auditor; concurrent runners never share a job."""

from __future__ import annotations

import base64
import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controlplane.contracts import statement as st
from controlplane.runners.sdk import ContractRefused, LeaseLost
from tests.api.helpers import assert_problem
from tests.governance.helpers import pinned_clock
from tests.runners.helpers import Lab


def _forged(envelope: dict[str, Any]) -> dict[str, Any]:
    forged = copy.deepcopy(envelope)
    signature = bytearray(base64.b64decode(forged["signatures"][0]["sig"]))
    signature[0] ^= 0x01
    forged["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    return forged


def test_every_refused_claim_is_a_clear_error_and_a_ledger_entry(lab: Lab) -> None:
    with pinned_clock(datetime.now(UTC)) as clk:
        rubric, dataset = lab.approved_data("c")
        _, other = lab.approved_data("other")
        runner = lab.runner("runner-c")
        job = lab.queue("reward_model", datasets=[dataset["ref"]], rubric=rubric["ref"])
        data = [dataset, rubric]

        good = lab.contract("reward_model", data, [runner.id])
        revoked = lab.contract("reward_model", data, [runner.id])
        lab.cp.contracts.revoke(lab.owner.principal, lab.contract_id(revoked), "consent withdrawn")
        stranger = Ed25519PrivateKey.generate()  # a key nobody registered
        unknown_key = st.sign(lab.statement("reward_model", data, [runner.id]), stranger)
        cases: list[tuple[str, Any, str]] = [
            ("none", None, "no_contract"),
            ("forged", _forged(good), "forged_signature"),
            ("unknown key", unknown_key, "unknown_key"),
            ("revoked", revoked, "revoked"),
            (
                "not covered",
                lab.contract("reward_model", [other, rubric], [runner.id]),
                "not_covered",
            ),
            ("wrong purpose", lab.contract("dpo", data, [runner.id]), "wrong_purpose"),
            (
                "wrong consumer",
                lab.contract("reward_model", data, ["someone-else"]),
                "wrong_consumer",
            ),
        ]
        expiring = lab.contract(
            "reward_model", data, [runner.id], expires=clk.now + timedelta(hours=1)
        )

        def refused(contract: Any, code: str) -> dict[str, Any]:
            before = lab.size()
            with lab.http(runner) as http:
                response = http.post(f"/v1/jobs/{job['id']}/claim", json={"contract": contract})
            problem = assert_problem(response, 403)
            assert problem["type"].endswith("/contract-rejected"), problem
            new = lab.entries(before)
            assert [e["action"] for e in new] == ["contract.rejected"], new
            payload = new[0]["payload"]
            assert payload["job_id"] == job["id"] and payload["consumer"] == runner.id
            assert payload["input_digests"] == [dataset["digest"], rubric["digest"]]
            assert payload["reason"] in problem["detail"]
            assert payload["code"] == code, payload
            return payload

        for label, contract, code in cases:
            payload = refused(contract, code)
            if label == "forged":  # the auditor sees which contract the forgery claimed to be
                assert (payload["contract_id"] or payload["presented_id"]) == lab.contract_id(good)
        clk.advance(hours=2)
        assert "expired" in refused(expiring, "expired")["reason"]
        assert lab.job(job["id"])["state"] == "queued"

        # the claim-next form refuses a contract it cannot use just the same
        with pytest.raises(ContractRefused, match="revoked"):
            lab.sdk(runner).claim_next(lab.project, revoked)
        fresh_id = lab.contract_id(lab.contract("reward_model", data, [runner.id]))
        # someone without the runner role is denied before any contract is looked at
        before = lab.size()
        with lab.http(lab.eng) as http:
            response = http.post(f"/v1/jobs/{job['id']}/claim", json={"contract": fresh_id})
        assert_problem(response, 403)
        assert [e["action"] for e in lab.entries(before)] == ["access.denied"]
        # and a valid contract still claims the job
        claimed = lab.sdk(runner).claim(job["id"], fresh_id)
        assert claimed["state"] == "claimed" and claimed["attempts"] == 1


def test_concurrent_runners_never_claim_the_same_job(lab: Lab) -> None:
    rubric, dataset = lab.approved_data("e")
    runners = [lab.runner(f"runner-{i}") for i in range(4)]
    contract = lab.contract("dpo", [dataset, rubric], [r.id for r in runners])
    base = lab.register_model("policy", "base", "sha256:" + "ab" * 32, "s3://base")
    jobs = [lab.queue("dpo", datasets=[dataset["ref"]], base_model=base["ref"]) for _ in range(6)]
    claimed: dict[str, list[int]] = {r.id: [] for r in runners}
    errors: list[BaseException] = []
    start = threading.Barrier(len(runners))

    def work(who: Any) -> None:
        sdk = lab.sdk(who)
        try:
            start.wait()
            while (job := sdk.claim_next(lab.project, contract)) is not None:
                claimed[who.id].append(job["id"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    taken = sorted(job_id for ids in claimed.values() for job_id in ids)
    assert taken == sorted(j["id"] for j in jobs)  # every job once, none twice
    assert len(lab.entries(action="job.claimed")) == len(jobs)

    # many runners racing for one job by id: exactly one wins, the rest hear 409
    last = lab.queue("dpo", datasets=[dataset["ref"]], base_model=base["ref"])
    outcomes: list[str] = []
    race = threading.Barrier(len(runners))

    def grab(who: Any) -> None:
        race.wait()
        try:
            lab.sdk(who).claim(last["id"], contract)
            outcomes.append("won")
        except LeaseLost:
            outcomes.append("conflict")

    threads = [threading.Thread(target=grab, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["conflict"] * (len(runners) - 1) + ["won"]
