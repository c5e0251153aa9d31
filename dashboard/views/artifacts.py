"""Artifacts: every version in the project, searchable and filterable; open one for its page."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from controlplane.registry.refs import KINDS
from dashboard import data, state

api = state.api()
project = state.project()
st.title("Artifacts")
st.caption(f"Project **{project}**")

search, kind_col, stage_col = st.columns([2, 1, 1])
query = search.text_input("Search names", key="artifacts_q", placeholder="e.g. helpful")
kind = kind_col.selectbox("Kind", ["all", *KINDS], key="artifacts_kind")
try:
    rows = data.inventory(api, project, None if kind == "all" else kind, query or None)
except ApiError as exc:
    state.show_api_error(exc, "Artifacts")
    st.stop()
stages = sorted({r["stage"] for r in rows})
stage = stage_col.selectbox("Stage", ["all", *stages], key="artifacts_stage")
if stage != "all":
    rows = [r for r in rows if r["stage"] == stage]

if not rows:
    st.info("No versions match." if query or kind != "all" else "No artifacts registered yet.")
    st.stop()

frame = pd.DataFrame(
    [
        {
            "version": r["ref"],
            "kind": r["kind"],
            "stage": r["stage"],
            "digest": r["digest"][:23] + "...",
            "created by": r["created_by"],
            "created at": str(r["created_at"])[:19].replace("T", " "),
        }
        for r in rows
    ]
)
st.write(f"{len(rows)} version(s). Select a row, or pick a version below, to open its page.")
picked = st.dataframe(
    frame,
    hide_index=True,
    key="artifacts_table",
    on_select="rerun",
    selection_mode="single-row",
)
selected = getattr(getattr(picked, "selection", None), "rows", [])
if selected:
    state.open_version(project, rows[selected[0]]["ref"])

choice = st.selectbox("Version", [r["ref"] for r in rows], key="artifacts_pick")
if st.button("Open version", key="artifacts_open", type="primary"):
    state.open_version(project, choice)
