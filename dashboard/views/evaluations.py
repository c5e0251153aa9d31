"""Evaluations: metrics of successive versions of a policy or reward model over time, against
the thresholds of the promotion rules, so drift and regressions are seen rather than read."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from controlplane.registry.refs import MODEL_KINDS
from dashboard import data, state

api = state.api()
project = state.project()
st.title("Evaluations")
st.caption(f"Project **{project}**")

kind_col, name_col = st.columns(2)
kind = kind_col.selectbox("Kind", list(MODEL_KINDS)[::-1], key="evals_kind")
try:
    names = [a["name"] for a in data.artifacts(api, project, kind)]
except ApiError as exc:
    state.show_api_error(exc, "Artifacts")
    st.stop()
if not names:
    st.info(f"No {kind} registered in this project.")
    st.stop()
name = name_col.selectbox("Name", names, key="evals_name")

try:
    rows = data.metric_series(api, project, kind, name)
    rules = data.rules_in_force(api)
except ApiError as exc:
    state.show_api_error(exc, "Evaluations")
    st.stop()
if not rows:
    st.info(f"No evaluation is linked to any version of {kind}/{name}.")
    st.stop()

frame = pd.DataFrame(rows)
frame["evaluated_at"] = pd.to_datetime(frame["evaluated_at"])
frame["label"] = "v" + frame["version"].astype(str)
limits_list = data.thresholds(rules, kind)
limits = pd.DataFrame(limits_list)
modes = sorted(frame["mode"].unique())
mode = st.radio("Mode", ["all", *modes], horizontal=True, key="evals_mode")
if mode != "all":
    frame = frame[frame["mode"] == mode]

for metric in sorted(frame["metric"].unique()):
    series = frame[frame["metric"] == metric].sort_values("evaluated_at")
    base = alt.Chart(series).encode(
        x=alt.X("evaluated_at:T", title="evaluated at", axis=alt.Axis(format="%Y-%m-%d %H:%M")),
        y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
        color=alt.Color("mode:N"),
        tooltip=["model:N", "evaluation:N", "mode:N", "value:Q", "evaluated_at:T", "stage:N"],
    )
    layers = [
        base.mark_line(point=alt.OverlayMarkDef(size=70)),
        base.mark_text(dy=-12).encode(text="label:N"),
    ]
    if not limits.empty:
        lines = limits[limits["metric"] == metric].drop_duplicates(["op", "value"])
        if not lines.empty:
            lines = lines.assign(rule=lines["op"] + " " + lines["value"].map("{:g}".format))
            layers.append(
                alt.Chart(lines)
                .mark_rule(color="#c0392b", strokeDash=[6, 4])
                .encode(y="value:Q", tooltip=["rule:N", "stage:N", "mode:N"])
            )
    st.markdown(f"**{metric}**")
    st.altair_chart(alt.layer(*layers).properties(height=220), width="stretch")

st.subheader("Change from the previous version")
changes = []
for (metric, mode_), group in frame.sort_values("version").groupby(["metric", "mode"]):
    previous = None
    for _, row in group.iterrows():
        crossed = [
            str(t) for t in data.threshold_rules(limits_list, metric) if not t.holds(row.value)
        ]
        changes.append(
            {
                "model": row.model,
                "metric": metric,
                "mode": mode_,
                "value": row.value,
                "change": None if previous is None else round(row.value - previous, 6),
                "breaks threshold": ", ".join(crossed),
            }
        )
        previous = row.value
st.dataframe(pd.DataFrame(changes), hide_index=True, key="evals_changes")
