"""Overview: is the record intact, what is in production and why, what waits, what was refused."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from controlplane.client.verify import verify_server
from controlplane.ledger.errors import LedgerError
from dashboard import data, state

api = state.api()
project = state.project()
st.title("Overview")
st.caption(f"Project **{project}** · ledger shared by every project")

# -- the ledger ------------------------------------------------------------------------------

try:
    checkpoint, trust = state.session_checkpoint()
except ApiError as exc:
    state.show_api_error(exc, "Latest checkpoint")
    st.stop()
except (LedgerError, ValueError) as exc:
    st.error(f"The latest checkpoint does not verify: {exc}")
    st.stop()

latest = api.get("/v1/ledger/checkpoint")
left, middle, right = st.columns(3)
left.metric("Ledger entries", int(latest["tree_size"]))
middle.metric("Signed checkpoint", f"size {checkpoint.size}")
right.metric("Signed at", str(latest["created_at"])[:19].replace("T", " "))
with st.expander("Latest signed checkpoint (C2SP signed note)"):
    st.code(latest["note"], language=None)
    st.caption(f"Trusted here: {trust}. Root {checkpoint.root_hash.hex()}")

st.subheader("Is the record intact?")
st.write(
    "Downloads every entry, the signing keys and the signed checkpoints, recomputes every "
    "hash and the Merkle root, checks every signature (checkpoints and sign-offs) here in the "
    "dashboard, and pins the result for this session so later checks prove consistency."
)
if st.button("Verify the whole ledger now", type="primary", key="verify_now"):
    with st.spinner("verifying..."):
        report = state.attempt("Verification", lambda: verify_server(api, state.pins()), None)
    if report is not None:
        st.session_state["cp_verification"] = report
        state.forget_checkpoint()
report = st.session_state.get("cp_verification")
if report is not None:
    if report.ok:
        st.success(
            f"Verified: {report.size} entries, root {report.root_hash[:16]}..., "
            f"{report.checkpoints_verified} signed checkpoint(s), "
            f"{report.signoffs_verified} sign-off signature(s). Nothing was rewritten."
        )
    else:
        where = (
            f" First bad seq: {report.first_bad_seq}." if report.first_bad_seq is not None else ""
        )
        st.error(f"Verification FAILED.{where}")
        for problem in report.problems[:20]:
            st.write(f"- {problem}")

# -- the project -----------------------------------------------------------------------------

rows = state.attempt(f"Artifacts of {project}", lambda: data.inventory(api, project), [])

st.subheader("In production")
production = state.attempt("Production status", lambda: data.in_production(api, project, rows), [])
if not production:
    st.info("No model version is in production in this project.")
for holder in production:
    with st.container(border=True):
        head, button = st.columns([3, 1])
        head.markdown(
            f"**{holder['ref']}** · since {holder.get('since') or '?'} · request "
            f"{holder.get('request_id', '-')} under the rules of ledger entry "
            f"{holder.get('rules_seq', '-')}"
        )
        if button.button(f"Open {holder['ref']}", key=f"open_prod_{holder['ref']}"):
            state.open_version(project, holder["ref"])
        st.markdown(
            "Trained on: "
            + (", ".join(f"`{r}`" for r in holder.get("trained_on", [])) or "nothing recorded")
        )
        approvals = holder.get("approvals", [])
        st.markdown(
            "Sign-offs: "
            + (
                ", ".join(
                    f"{a['decision']} by **{a['signer']}** (key `{a['key_id'][:16]}`)"
                    for a in approvals
                )
                or "none recorded"
            )
        )

st.subheader("Versions per kind and stage")
counts = data.stage_counts(rows)
if counts:
    frame = pd.DataFrame(
        [{"kind": k, "stage": s, "versions": n} for k, by in counts.items() for s, n in by.items()]
    )
    table, chart = st.columns([3, 2])
    table.dataframe(
        frame.pivot_table(index="kind", columns="stage", values="versions", fill_value=0),
        key="stage_counts",
    )
    chart.altair_chart(
        alt.Chart(frame)
        .mark_bar()
        .encode(x="versions:Q", y=alt.Y("kind:N", sort=list(counts)), color="stage:N")
        .properties(height=180),
    )
else:
    st.info("No artifacts registered in this project yet.")

st.subheader("Pending promotion requests")
pending = state.attempt("Requests", lambda: data.requests(api, project, state="open"), [])
if pending:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "request": r["id"],
                    "version": r["ref"],
                    "move": f"{r['from_stage']} -> {r['target_stage']}",
                    "approvals": f"{r['quorum']['approvals']}/{r['quorum']['required']}"
                    if r.get("quorum")
                    else "",
                    "requester": r["requester"],
                    "expires": r["expires_at"],
                }
                for r in pending
            ]
        ),
        hide_index=True,
        key="pending",
    )
    if st.button("Review in Approvals", key="to_approvals"):
        st.switch_page("views/approvals.py")
else:
    st.write("No open requests.")

st.subheader("Training jobs")
queue = state.attempt("Jobs", lambda: data.jobs(api, project), [])
if queue is None:
    st.write("No jobs recorded (this server runs no job queue).")
elif not queue:
    st.write("No jobs in this project.")
else:
    by_state: dict[str, int] = {}
    for job in queue:
        by_state[job["state"]] = by_state.get(job["state"], 0) + 1
    columns = st.columns(len(by_state))
    for column, (name, count) in zip(columns, sorted(by_state.items()), strict=True):
        column.metric(f"jobs {name}", count)

st.subheader("Recent refusals")
st.caption(
    "Promotions refused by policy, sign-offs refused, contracts refused or rejected at a job's "
    "claim, identity resolutions refused, access denied."
)
refused = state.attempt(
    "Refusals", lambda: data.recent(api, data.REFUSAL_ACTIONS, int(latest["tree_size"])), []
)
if refused:
    st.dataframe(
        pd.DataFrame([data.entry_row(e) for e in refused]), hide_index=True, key="refusals"
    )
else:
    st.write("Nothing was refused recently.")
