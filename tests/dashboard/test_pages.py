"""Every page of the dashboard, run by Streamlit's AppTest against the live API.

The app signs in through its own form with a real token; every number and table on a page
comes over HTTP from the API, so these tests also show that RBAC reaches the pages.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from streamlit.testing.v1 import AppTest

from controlplane.client.api import ApiClient
from controlplane.client.verify import load_bundle_data, verify_bundle
from controlplane.ledger.entry import format_timestamp
from dashboard import data
from tests.dashboard.conftest import Scene, pem
from tests.dashboard.helpers import frame, open_page, signed_in, texts


def test_sign_in_refuses_a_bad_token_and_keeps_a_good_one_in_the_session(scene: Scene) -> None:
    from tests.dashboard.helpers import APP, TIMEOUT

    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert [t.value for t in at.title] == ["controlplane"]
    at.text_input(key="login_url").input(scene.server.url)
    at.text_input(key="login_token").input("cpt_not-a-token")
    at.button[0].click().run()
    assert "cp_me" not in at.session_state
    assert any("Sign-in failed" in e.value for e in at.error)

    at = signed_in(scene.server.url, scene.tokens["carol"])
    assert at.session_state["cp_me"]["id"] == "carol"
    assert "Overview" in [t.value for t in at.title]
    assert at.selectbox(key="cp_project_picker").value == scene.project
    at.button(key="cp_sign_out").click().run()
    assert "cp_me" not in at.session_state
    assert [t.value for t in at.title] == ["controlplane"]


def test_overview_verifies_the_ledger_and_shows_what_is_behind_production(scene: Scene) -> None:
    at = signed_in(scene.server.url, scene.tokens["carol"])
    assert at.metric[0].label == "Ledger entries"
    at.button(key="verify_now").click().run()
    assert not at.exception
    verdict = at.success[0].value
    assert verdict.startswith("Verified:") and "Nothing was rewritten" in verdict, verdict
    report = at.session_state["cp_verification"]
    assert report.ok and report.signoffs_verified >= 8

    page = texts(at)
    assert f"**{scene.policy['ref']}**" in page
    assert "`dataset/prefs@1`" in page and "`rubric/helpfulness@1`" in page
    assert "approve by **alice**" in page and "approve by **carol**" in page
    counts = frame(at, "kind")
    assert counts.loc["policy", "production"] == 1
    assert counts.loc["dataset", "approved"] == 1
    refused = frame(at, "reason")
    assert "promotion.refused" in set(refused["action"])
    assert any("missing evidence" in r for r in refused["reason"])


def test_artifacts_are_searchable_and_filterable_and_open_a_version(scene: Scene) -> None:
    at = open_page(signed_in(scene.server.url, scene.tokens["eng"]), "artifacts")
    every = frame(at, "version")
    assert {"dataset", "rubric", "reward_model", "policy", "evaluation"} <= set(every["kind"])

    at.text_input(key="artifacts_q").input("help").run()
    assert list(frame(at, "version")["version"]) == ["rubric/helpfulness@1"]
    at.text_input(key="artifacts_q").input("").run()
    at.selectbox(key="artifacts_kind").select("dataset").run()
    assert list(frame(at, "version")["version"]) == ["dataset/prefs@1"]
    at.selectbox(key="artifacts_kind").select("all").run()
    at.selectbox(key="artifacts_stage").select("production").run()
    assert list(frame(at, "version")["version"]) == [scene.policy["ref"]]

    at.button(key="artifacts_open").click().run()
    assert at.query_params["ref"] == scene.policy["ref"]
    assert scene.policy["ref"] in [t.value for t in at.title]


def test_version_page_shows_digest_lineage_graph_approvals_and_contracts(scene: Scene) -> None:
    at = signed_in(scene.server.url, scene.tokens["carol"])
    at = open_page(at, "version", project=scene.project, ref=scene.policy["ref"])
    assert next(c.value for c in at.code) == scene.policy["digest"]
    dot = at.get("graphviz_chart")[0].proto.spec
    for node in ("rubric/helpfulness@1", "dataset/prefs@1", "reward_model/rm@1"):
        assert f'"{node}"' in dot
    assert '"dataset/prefs@1" -> "policy/assistant@1" [label="trained_on"]' in dot
    assert '"policy/assistant@1" -> "evaluation/eval-assistant-online@1"' in dot

    approvals, contracts, evaluations = (t.value for t in at.table)
    production = approvals[approvals["to"] == "production"]
    assert sorted(production["signer"]) == ["alice", "carol"]
    assert set(approvals["signature"]) == {"verified"}
    assert scene.world.carol.key_id[:16] in set(production["key id"])
    assert set(contracts["contract"]) == {"prefs-dpo"}
    assert set(contracts["covers"]) == {"dataset/prefs@1", "rubric/helpfulness@1"}
    assert set(evaluations["mode"]) == {"offline", "online"}
    timeline = frame(at, "stage")
    assert list(timeline["stage"]) == [
        "registered", "candidate", "staging", "canary", "production"
    ]  # fmt: skip
    assert "Not mirrored to MLflow." in texts(at)

    # the graph's nodes navigate: open the dataset it was trained on
    at.button(key="node_dataset/prefs@1").click().run()
    assert at.query_params["ref"] == "dataset/prefs@1"
    assert "dataset/prefs@1" in [t.value for t in at.title]


def test_approver_sees_evidence_and_quorum_and_signs_with_a_key_file(scene: Scene) -> None:
    request = scene.open_request()
    rid = request["id"]
    at = open_page(signed_in(scene.server.url, scene.tokens["alice"]), "approvals")
    page = texts(at)
    assert f"Request {rid}: {request['ref']} candidate -> staging" in page
    assert "Still missing: 1 more approval" in page
    assert "eng (the requester)" in page and "trainer (created the version)" in page
    checks = at.table[0].value
    assert set(checks["metric"]) == {"win_rate", "safety_violation_rate"}
    assert set(checks["holds"]) == {"yes"}
    assert any(f"controlplane approve {rid}" in c.value for c in at.code)

    # a key that is not alice's is refused here, before anything reaches the ledger
    at.file_uploader(key=f"req_key_{rid}").upload("bob.pem", pem(scene.world.bob)).run()
    at.button(key=f"req_sign_{rid}").click().run()
    assert any("not an active sign-off key registered to alice" in e.value for e in at.error)
    assert scene.world.request(rid)["state"] == "open"

    at.file_uploader(key=f"req_key_{rid}").upload("alice.pem", pem(scene.world.alice)).run()
    at.text_input(key=f"req_comment_{rid}").input("metrics hold").run()
    at.button(key=f"req_sign_{rid}").click().run()
    assert not at.exception
    assert any("now approved" in s.value for s in at.success), texts(at)
    closed = scene.world.request(rid)
    assert closed["state"] == "approved"
    assert closed["signoffs"][0]["signer"] == "alice"
    assert closed["signoffs"][0]["key_id"] == scene.world.alice.key_id


def test_a_user_without_a_signer_role_gets_no_sign_off_form(scene: Scene) -> None:
    request = scene.open_request()
    at = open_page(signed_in(scene.server.url, scene.tokens["eng"]), "approvals")
    assert f"Request {request['id']}:" in texts(at)
    assert not [b for b in at.button if b.key == f"req_sign_{request['id']}"]
    assert "Signing needs one of the roles approver, compliance_reviewer" in texts(at)


def test_evaluations_plot_successive_versions_against_the_thresholds(scene: Scene) -> None:
    at = open_page(signed_in(scene.server.url, scene.tokens["carol"]), "evaluations")
    assert at.selectbox(key="evals_kind").value == "policy"
    charts = at.get("vega_lite_chart")
    assert len(charts) == 2  # one per metric
    changes = frame(at, "breaks threshold")
    offline = changes[(changes["mode"] == "offline") & (changes["metric"] == "win_rate")]
    assert list(offline["model"]) == [f"policy/assistant@{v}" for v in (1, 2, 3)]
    assert list(offline["breaks threshold"]) == ["", "win_rate >= 0.55", ""]
    assert round(float(offline["change"].iloc[1]), 2) == -0.12


def _filter(at: AppTest) -> None:
    next(b for b in at.button if b.label == "Filter").click().run()


def test_ledger_filters_and_an_entry_proves_its_inclusion(scene: Scene) -> None:
    at = open_page(signed_in(scene.server.url, scene.tokens["carol"]), "ledger")
    newest = frame(at, "action")
    assert list(newest["seq"]) == sorted(newest["seq"], reverse=True)

    at.text_input(key="ledger_action").input("promotion.signed_off")
    at.text_input(key="ledger_actor").input("carol")
    _filter(at)
    rows = frame(at, "action")
    assert set(rows["action"]) == {"promotion.signed_off"} and set(rows["actor"]) == {"carol"}

    first = scene.world.entries()[10]["timestamp"]
    at.text_input(key="ledger_action").input("")
    at.text_input(key="ledger_actor").input("")
    at.text_input(key="ledger_from").input(first)
    at.text_input(key="ledger_to").input(first)
    _filter(at)
    stamped = frame(at, "action")
    assert set(stamped["time"]) == {first} and 10 in set(stamped["seq"])

    at.number_input(key="ledger_seq").set_value(10)
    at.button(key="ledger_open").click().run()
    assert at.query_params["seq"] == "10"
    page = texts(at)
    assert "entry_hash recomputed here from the fields below: it matches." in page
    assert "Entry 10 is in the signed tree of" in page
    links = frame(at, "holds")
    assert set(links["holds"]) == {"yes"}
    at = open_page(at, "entry", seq="10")  # AppTest keeps requesting the page it switched to
    at.button(key="entry_next").click().run()
    assert at.query_params["seq"] == "11"


def test_audit_bundles_verify_offline_and_the_report_names_data_and_signers(
    scene: Scene,
) -> None:
    at = open_page(signed_in(scene.server.url, scene.tokens["carol"]), "audit")
    assert at.selectbox(key="audit_bundle_ref").value == scene.policy["ref"]
    at.button(key="audit_prepare").click().run()
    bundle = load_bundle_data(at.session_state["audit_bundle"])
    assert verify_bundle(bundle).ok
    focus = bundle["focus"]
    assert "dataset/prefs@1" in focus["lineage"] and focus["ref"] == scene.policy["ref"]
    actions = {bundle["entries"][s]["action"] for s in focus["seqs"]}
    assert {"artifact.version_registered", "promotion.signed_off", "stage.changed"} <= actions

    entries = scene.world.entries()
    start, end = entries[5]["timestamp"], entries[20]["timestamp"]
    at.radio(key="audit_scope").set_value("A time range").run()
    at.text_input(key="audit_from").input(start)
    at.text_input(key="audit_to").input(end).run()
    at.button(key="audit_prepare").click().run()
    narrowed = load_bundle_data(at.session_state["audit_bundle"])
    report = verify_bundle(narrowed)
    assert report.ok, report.problems
    assert 21 <= narrowed["tree_size"] < len(entries)
    assert narrowed["focus"]["first_seq"] <= 5 and narrowed["focus"]["last_seq"] >= 20

    at.button(key="audit_report_build").click().run()
    text = at.session_state["audit_report"]
    assert text.startswith(f"# Audit report: {scene.policy['ref']}")
    for fact in ("dataset/prefs@1", "rubric/helpfulness@1", "prefs-dpo", "compliance_reviewer"):
        assert fact in text, fact
    assert "**intact**" in text and "NOT PROVEN" not in text and "INVALID" not in text
    assert f"| {scene.world.carol.key_id[:16]} |" in text


def test_pages_degrade_to_what_the_user_may_see(scene: Scene) -> None:
    """An engineer may not export: the page says so instead of failing."""
    at = open_page(signed_in(scene.server.url, scene.tokens["eng"]), "audit")
    at.button(key="audit_prepare").click().run()
    assert not at.exception
    assert any("not allowed for eng" in w.value for w in at.warning)
    assert "audit_bundle" not in at.session_state


def test_times_typed_by_a_user_are_compared_in_the_ledgers_one_spelling() -> None:
    moment = format_timestamp(datetime(2031, 3, 3, 9, tzinfo=UTC))
    assert data.parse_time("2031-03-03T09:00:00Z") == moment
    assert data.parse_time("2031-03-03T10:00:00+01:00") == moment
    assert data.parse_time("2031-03-03 09:00") == moment  # naive means UTC
    with pytest.raises(ValueError, match="RFC 3339"):
        data.parse_time("yesterday")


def test_a_sign_off_whose_signature_does_not_verify_is_shown_as_invalid(scene: Scene) -> None:
    """The pages' "verified" is computed, not assumed: a sign-off entry signed by a key its
    signer never registered (here bob's, claimed by alice) is reported as invalid."""
    entries = scene.world.entries(action="promotion.signed_off")
    genuine = next(e for e in entries if e["actor"] == "alice")
    request = scene.world.request(genuine["payload"]["request_id"])
    forged = {
        **genuine,
        "payload": {
            **genuine["payload"],
            "envelope": scene.world.envelope(scene.world.alice, request, key=scene.world.bob.key),
        },
    }
    with ApiClient(scene.server.url, scene.tokens["carol"]) as api:
        good, bad = data.signatures(api, [genuine, forged])
    assert good.verified and good.row()["signature"] == "verified"
    assert not bad.verified and bad.row()["signature"].startswith("INVALID: ")
