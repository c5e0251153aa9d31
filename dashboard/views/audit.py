"""Audit export: a bundle that ``controlplane verify --bundle`` accepts (whole ledger, one
version and its lineage, or a time range), and a readable report behind one version."""

from __future__ import annotations

import streamlit as st

from controlplane.client.api import ApiError
from controlplane.client.verify import verify_bundle, verify_server
from controlplane.ledger.errors import LedgerError
from controlplane.registry.refs import VersionRef
from dashboard import audit, data, state

api = state.api()
project = state.project()
st.title("Audit export")
st.caption(f"Project **{project}**")

rows = state.attempt("Artifacts", lambda: data.inventory(api, project), [])
production = [r["ref"] for r in rows if r["stage"] == "production"]
refs = production + [r["ref"] for r in rows if r["ref"] not in production]

st.subheader("Audit bundle")
st.write(
    "Entries, signed checkpoints and signing keys, checked offline by anyone with "
    "`controlplane verify --bundle FILE` (no server, no database). A bundle always starts at "
    "the ledger's first entry, since only the whole prefix proves the hash chain and the "
    "Merkle root; a narrowed bundle lists the entries that matter under `focus`."
)
scope = st.radio(
    "Scope",
    ["One version and its lineage", "A time range", "The whole ledger"],
    horizontal=True,
    key="audit_scope",
)
name = "controlplane-audit-bundle.json"
ref_choice = None
since = until = ""
if scope == "One version and its lineage":
    if not refs:
        st.info("No versions in this project.")
    else:
        ref_choice = st.selectbox("Version", refs, key="audit_bundle_ref")
elif scope == "A time range":
    left, right = st.columns(2)
    since = left.text_input(
        "From (RFC 3339, UTC)", key="audit_from", placeholder="2026-11-01T00:00:00Z"
    )
    until = right.text_input(
        "To (RFC 3339, UTC)", key="audit_to", placeholder="2026-11-02T00:00:00Z"
    )

if st.button("Prepare the bundle", key="audit_prepare", type="primary"):
    try:
        with st.spinner("exporting..."):
            if scope == "One version and its lineage" and ref_choice:
                bundle = audit.artifact_bundle(api, project, VersionRef.parse(ref_choice))
                name = f"audit-{ref_choice.replace('/', '-').replace('@', '-v')}.json"
            elif scope == "A time range":
                bundle = audit.time_range_bundle(
                    api, data.parse_time(since), data.parse_time(until)
                )
                name = "audit-time-range.json"
            else:
                bundle = audit.fetch_bundle(api)
            check = verify_bundle(bundle)
    except ApiError as exc:
        state.show_api_error(exc, "Export")
    except (ValueError, LedgerError) as exc:
        st.error(str(exc))
    else:
        st.session_state["audit_bundle"] = audit.to_bytes(bundle)
        st.session_state["audit_bundle_name"] = name
        st.session_state["audit_bundle_check"] = check
        st.session_state["audit_bundle_focus"] = bundle.get("focus")

prepared = st.session_state.get("audit_bundle")
if prepared is not None:
    check = st.session_state["audit_bundle_check"]
    focus = st.session_state.get("audit_bundle_focus")
    if check.ok:
        st.success(
            f"Bundle checked here before download: {check.size} entries, root "
            f"{check.root_hash[:16]}..., {check.checkpoints_verified} checkpoint(s), "
            f"{check.signoffs_verified} sign-off signature(s) verified."
            + (f" Focus: {len(focus.get('seqs', []))} entries." if focus else "")
        )
    else:
        st.error("The bundle does NOT verify: " + "; ".join(check.problems[:5]))
    st.download_button(
        "Download the audit bundle",
        prepared,
        file_name=st.session_state["audit_bundle_name"],
        mime="application/json",
        key="audit_download",
        on_click="ignore",
    )
    st.code(
        f"controlplane verify --bundle {st.session_state['audit_bundle_name']}", language="bash"
    )

st.subheader("Report behind one version")
st.write(
    "Markdown: the version, its stage history, every sign-off with signer and key id (each "
    "signature checked here), the data and rubric it was built from with their approvals and "
    "contracts, its evaluations, and inclusion proofs of those ledger entries."
)
if not refs:
    st.info("No versions in this project.")
    st.stop()
report_ref = st.selectbox("Version (production versions first)", refs, key="audit_report_ref")
if st.button("Build the report", key="audit_report_build"):
    try:
        with st.spinner("gathering..."):
            if st.session_state.get("cp_verification") is None:
                st.session_state["cp_verification"] = verify_server(api, state.pins())
                state.forget_checkpoint()
            checkpoint, _ = state.session_checkpoint()
            text = audit.report(
                api,
                project,
                VersionRef.parse(report_ref),
                checkpoint,
                st.session_state.get("cp_verification"),
                reader=state.me()["id"],
            )
    except ApiError as exc:
        state.show_api_error(exc, "Report")
    except (ValueError, LedgerError) as exc:
        st.error(str(exc))
    else:
        st.session_state["audit_report"] = text
        st.session_state["audit_report_name"] = (
            f"audit-report-{report_ref.replace('/', '-').replace('@', '-v')}.md"
        )
text = st.session_state.get("audit_report")
if text is not None:
    st.download_button(
        "Download the report (Markdown)",
        text.encode(),
        file_name=st.session_state["audit_report_name"],
        mime="text/markdown",
        key="audit_report_download",
        on_click="ignore",
    )
    with st.container(border=True):
        st.markdown(text)
