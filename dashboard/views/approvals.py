"""Approvals: the queue, the evidence behind each request, what quorum still lacks, and a
sign-off with the approver's own key (uploaded here, or the CLI command to run instead)."""

from __future__ import annotations

import shlex

import pandas as pd
import streamlit as st

from controlplane.client import signoff
from controlplane.client.api import ApiError
from controlplane.crypto.keys import private_key_from_pem
from controlplane.governance.rules import RulesError
from dashboard import data, state

api = state.api()
project = state.project()
who = state.me()
st.title("Approvals")
st.caption(f"Project **{project}** · signed in as **{who['id']}**")

notice = st.session_state.pop("approvals_notice", None)
if notice:
    st.success(notice)

try:
    queue = data.requests(api, project, state="open")
except ApiError as exc:
    state.show_api_error(exc, "The request queue")
    st.stop()

my_roles = {g["role"] for g in who.get("roles", []) if g["project"] in (project, "*")}
if not queue:
    st.info("No open promotion requests in this project.")


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


for request in queue:
    rid = request["id"]
    quorum = request.get("quorum") or {}
    with st.container(border=True):
        st.subheader(
            f"Request {rid}: {request['ref']} {request['from_stage']} -> {request['target_stage']}"
        )
        st.markdown(
            f"Requested by **{request['requester']}** at {request['opened_at']}; expires "
            f"{request['expires_at']}. Version created by {request['creator']}.  \n"
            f"Justification: {request['justification']}"
        )
        if st.button("Open the version", key=f"req_open_{rid}"):
            state.open_version(project, request["ref"])
        try:
            evidence = data.evidence(api, request)
        except (ApiError, RulesError, ValueError) as exc:
            st.error(f"Evidence could not be gathered: {exc}")
            continue

        st.markdown("**Evidence: evaluations against the rule's thresholds**")
        if evidence.describe:
            for clause, met in zip(evidence.describe, evidence.satisfied, strict=True):
                (st.success if met else st.error)(f"Needs {clause}: {'met' if met else 'NOT met'}")
            if evidence.checks:
                st.table(
                    pd.DataFrame(
                        [
                            {
                                "evaluation": c.evaluation,
                                "mode": c.mode,
                                "metric": c.metric,
                                "threshold": c.threshold,
                                "actual": c.actual,
                                "holds": _yes(c.holds),
                            }
                            for c in evidence.checks
                        ]
                    ),
                    hide_index=True,
                )
        else:
            st.write("The rule for this move asks for no evaluation.")

        st.markdown("**Lineage: datasets and rubrics behind it**")
        if evidence.lineage:
            st.table(
                pd.DataFrame(
                    [
                        {
                            "version": n["ref"],
                            "stage": n["stage"],
                            "depth": n["distance"],
                            f"is {evidence.required_stage}": _yes(
                                n["stage"] == evidence.required_stage
                            ),
                        }
                        for n in evidence.lineage
                    ]
                ),
                hide_index=True,
            )
            if evidence.gate_applies and not evidence.lineage_ok:
                st.error(
                    f"The lineage gate blocks this move: every dataset and rubric must be "
                    f"{evidence.required_stage}."
                )
        else:
            st.write("No dataset or rubric in its lineage.")

        st.markdown("**Quorum**")
        signed = ", ".join(
            f"{s['decision']} by {s['signer']} (key {s['key_id'][:16]})"
            for s in request.get("signoffs", [])
        )
        st.write(
            f"{quorum.get('approvals', 0)} of {quorum.get('required', '?')} approvals"
            + (f": {signed}" if signed else "")
        )
        if evidence.quorum_missing:
            st.warning("Still missing: " + "; ".join(evidence.quorum_missing))
        if evidence.excluded:
            st.caption("May not approve: " + ", ".join(evidence.excluded))

        already = any(s["signer"] == who["id"] for s in request.get("signoffs", []))
        may_sign = bool(my_roles & set(evidence.signers))
        if already:
            st.info(f"You ({who['id']}) have signed off this request.")
            continue
        if not may_sign:
            st.caption(
                f"Signing needs one of the roles {', '.join(evidence.signers)} in {project}."
            )
            continue

        st.markdown("**Your sign-off**")
        decision = st.radio(
            "Decision", ["approve", "reject"], horizontal=True, key=f"req_decision_{rid}"
        )
        comment = st.text_input(
            "Comment (recorded in the ledger; required to reject)", key=f"req_comment_{rid}"
        )
        command = ["controlplane", decision, str(rid), "--comment", comment or "..."]
        command += ["--url", api.url]
        st.caption(
            "Sign on your own machine with the CLI (it finds your key under "
            "CONTROLPLANE_KEYS_DIR, or pass --key FILE):"
        )
        st.code(shlex.join(command), language="bash")
        key_file = st.file_uploader(
            "...or sign here with your private key file (PEM, from `controlplane keys "
            "generate`; it is read by this dashboard process only, used once and not stored)",
            key=f"req_key_{rid}",
        )
        if st.button(f"Sign and {decision}", key=f"req_sign_{rid}", type="primary"):
            if decision == "reject" and not comment.strip():
                st.error("A rejection needs a comment.")
            elif key_file is None:
                st.error("Provide your private key file, or use the CLI command above.")
            else:
                try:
                    private = private_key_from_pem(key_file.getvalue(), key_file.name)
                    key = signoff.active_key(api, who["id"], private)
                    if key is None:
                        raise ValueError(
                            f"{key_file.name} is not an active sign-off key registered to "
                            f"{who['id']}"
                        )
                    result = signoff.sign_off(
                        api, rid, decision, comment, private, signer=who["id"]
                    )
                except ValueError as exc:
                    st.error(str(exc))
                except ApiError as exc:
                    state.show_api_error(exc, "Sign-off")
                else:
                    st.session_state["approvals_notice"] = (
                        f"Signed ({decision}) request {rid} with key {key['key_id'][:16]}; "
                        f"the request is now {result['state']}."
                    )
                    st.rerun()

st.subheader("Recently closed")
try:
    closed = [r for r in data.requests(api, project) if r["state"] != "open"][:20]
except ApiError:
    closed = []
if closed:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "request": r["id"],
                    "version": r["ref"],
                    "to": r["target_stage"],
                    "state": r["state"],
                    "signers": ", ".join(s["signer"] for s in r.get("signoffs", [])),
                    "closed": r.get("closed_at"),
                    "reason": r.get("closed_reason") or "",
                }
                for r in closed
            ]
        ),
        hide_index=True,
        key="closed_requests",
    )
else:
    st.write("None yet.")
