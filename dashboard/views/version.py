"""One version: digest, metadata, stage timeline, signed approvals, contracts, MLflow link and
its lineage graph (ancestors and descendants), each node a way to navigate."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from controlplane.errors import InvalidInput
from controlplane.registry.refs import VersionRef
from dashboard import data, state
from dashboard.lineage import ordered_nodes, to_dot

api = state.api()
project = st.query_params.get("project") or state.project()
raw = st.query_params.get("ref", "")
try:
    ref = VersionRef.parse(raw)
except InvalidInput:
    st.title("Version")
    st.info("Open a version from the Artifacts page.")
    if st.button("Artifacts", key="version_to_artifacts"):
        st.switch_page("views/artifacts.py")
    st.stop()

try:
    version = data.version(api, project, ref)
    graph = data.lineage(api, project, ref, "both")
    events = data.history(api, project, ref)
except ApiError as exc:
    st.title(str(ref))
    state.show_api_error(exc, str(ref))
    st.stop()

st.title(str(ref))
st.caption(f"Project **{project}** · stage **{version['stage']}**")

facts, links = st.columns([3, 1])
with facts:
    st.markdown("**Digest**")
    st.code(version["digest"], language=None)
    st.markdown(
        f"**URI** `{version['uri']}`  \n**Created** by {version['created_by']} at "
        f"{version['created_at']}"
    )
with links:
    if st.button(f"Ledger entry {version['ledger_seq']}", key="version_entry"):
        state.open_entry(int(version["ledger_seq"]))
    unknown = None
    try:
        mirrored = data.mlflow_mirror(api, project, ref)
    except ApiError as exc:  # MLflow did not answer: say so, never "not mirrored"
        mirrored, unknown = None, exc.detail
    where = None
    if mirrored is not None and mirrored.get("mlflow_version") is not None:
        where = f"MLflow model `{mirrored['model_name']}` version {mirrored['mlflow_version']}"
    mlflow = data.mlflow_link(version, state.settings().mlflow_tracking_uri, mirrored)
    run = (data.provenance(version) or {}).get("mlflow_run_id")
    if mlflow:
        st.link_button("Open in MLflow", mlflow)
        if where:
            st.caption(where)
    elif where:
        st.caption(f"{where} (no MLflow server address to link to).")
    elif run:
        st.caption(f"MLflow run `{run}` (no MLflow server address to link to).")
    elif unknown is not None:
        st.caption(f"MLflow mirror state unknown: {unknown}")
    else:
        st.caption("Not mirrored to MLflow.")
with st.expander("Metadata", expanded=bool(version.get("metadata"))):
    st.json(version.get("metadata") or {})

st.subheader("Lineage")
st.caption(
    "Parents point to children: rubric -> dataset -> reward model -> policy -> evaluation. "
    "Press a version below the graph to open it."
)
st.graphviz_chart(to_dot(graph), width="stretch")
others = [n for n in ordered_nodes(graph) if n["ref"] != str(ref)]
if others:
    columns = st.columns(min(3, len(others)))
    for index, node in enumerate(others):
        label = f"{'↑' if node['distance'] > 0 else '↓'} {node['ref']} ({node['stage']})"
        if columns[index % len(columns)].button(label, key=f"node_{node['ref']}"):
            state.open_version(project, node["ref"])
else:
    st.write("No recorded lineage.")

st.subheader("Stage history")
timeline = data.stage_timeline(events)
if timeline:
    frame = pd.DataFrame(timeline)
    frame["time"] = pd.to_datetime(frame["time"])
    order = list(dict.fromkeys(frame["stage"]))
    st.altair_chart(
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=80), interpolate="step-after")
        .encode(
            x=alt.X("time:T", title=None, axis=alt.Axis(format="%Y-%m-%d %H:%M")),
            y=alt.Y("stage:N", sort=order, title=None),
            tooltip=["time:T", "stage:N", "by:N", "reason:N", "seq:Q"],
        )
        .properties(height=60 + 30 * len(order)),
        width="stretch",
    )
    st.dataframe(frame, hide_index=True, key="version_timeline")

st.subheader("Approvals")
signed = state.attempt("Sign-off keys", lambda: data.signatures(api, events), [])
if signed:
    st.table(pd.DataFrame([s.row() for s in signed]), hide_index=True)
    bad = [s for s in signed if not s.verified]
    if bad:
        st.error(f"{len(bad)} sign-off signature(s) do not verify.")
    else:
        st.caption(
            "Each DSSE envelope was checked here against the signer's registered Ed25519 key."
        )
else:
    st.write("No sign-offs recorded for this version.")

st.subheader("Data contracts")
produced = data.provenance(version)
if produced is not None:
    st.markdown(
        f"Produced by job `{produced.get('job')}` ({produced.get('trainer')}) on runner "
        f"**{produced.get('runner')}**, queued by {produced.get('queued_by')}, under contract "
        f"`{produced.get('contract_id') or 'none'}`."
    )
covered = [n for n in graph["nodes"] if n["kind"] in ("dataset", "rubric") and n["distance"] >= 0]
if not covered:
    st.write("No dataset or rubric in this version's lineage.")
else:
    rows: list[dict[str, object]] | None = []
    for node in covered:
        contracts = state.attempt(
            "Contracts", lambda d=node["digest"]: data.contracts_for(api, project, d), []
        )
        if contracts is None:
            rows = None
            break
        rows += [
            {
                "covers": node["ref"],
                "contract": c["id"],
                "purpose": c["purpose"],
                "owner": c["owner"],
                "state": c["state"],
                "expires": c["expires_at"],
                "used for this version": "yes"
                if produced and produced.get("contract_id") == c["id"]
                else "",
            }
            for c in contracts
        ] or [{"covers": node["ref"], "contract": "none recorded"}]
    if rows is None:
        st.write("No contracts recorded (this server keeps no data contracts).")
    else:
        st.table(pd.DataFrame(rows), hide_index=True)

st.subheader("Evaluations")
evaluations = state.attempt("Evaluations", lambda: data.evaluations_of(api, project, version), [])
if evaluations:
    st.table(
        pd.DataFrame(
            [
                {
                    "evaluation": e["ref"],
                    "mode": (e.get("metadata") or {}).get("mode", ""),
                    **{
                        k: v
                        for k, v in ((e.get("metadata") or {}).get("metrics") or {}).items()
                        if isinstance(v, int | float)
                    },
                    "created at": e["created_at"],
                }
                for e in evaluations
            ]
        ),
        hide_index=True,
    )
else:
    st.write("No evaluation is linked to this version.")
