"""Ledger: entries filtered by actor, action, subject and time; open one to check its proof."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from dashboard import data, state

api = state.api()
st.title("Ledger")
try:
    size = data.ledger_size(api)
except ApiError as exc:
    state.show_api_error(exc, "The ledger")
    st.stop()
st.caption(f"{size} entries · every governance action and refusal, hash-chained and signed")

with st.form("ledger_filters"):
    a, b, c = st.columns(3)
    actor = a.text_input("Actor", key="ledger_actor", placeholder="e.g. alice")
    action = b.text_input("Action", key="ledger_action", placeholder="e.g. promotion.signed_off")
    project = c.text_input("Project", key="ledger_project")
    d, e, f = st.columns(3)
    kind = d.text_input("Subject kind", key="ledger_kind", placeholder="e.g. policy")
    name = e.text_input("Subject name", key="ledger_name")
    limit = f.number_input("Rows", min_value=10, max_value=5000, value=200, key="ledger_limit")
    g, h = st.columns(2)
    since = g.text_input(
        "From (RFC 3339, UTC)", key="ledger_from", placeholder="2026-11-01T00:00:00Z"
    )
    until = h.text_input("To (RFC 3339, UTC)", key="ledger_to")
    st.form_submit_button("Filter")

filters = {
    "actor": actor.strip() or None,
    "action": action.strip() or None,
    "project": project.strip() or None,
    "kind": kind.strip() or None,
    "name": name.strip() or None,
}
try:
    start = data.first_seq_at(api, size, data.parse_time(since)) if since.strip() else None
    end = (
        data.first_seq_at(api, size, data.parse_time(until), after=True) if until.strip() else size
    )
except ValueError as exc:
    st.error(str(exc))
    st.stop()
except ApiError as exc:
    state.show_api_error(exc, "Time filter")
    st.stop()

limit = int(limit)
if start is None:
    # Without a start time, show the newest entries that match.
    start = 0 if any(filters.values()) else max(0, end - limit)
try:
    rows = []
    for entry in data.entries(api, start, end, **filters):
        rows.append(entry)
        if len(rows) >= limit and not any(filters.values()):
            break
    rows = rows[-limit:]
except ApiError as exc:
    state.show_api_error(exc, "Entries")
    st.stop()

if not rows:
    st.info("No entry matches.")
else:
    st.write(
        f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, "
        f"seq {rows[0]['seq']} to {rows[-1]['seq']}, newest first."
    )
    picked = st.dataframe(
        pd.DataFrame([data.entry_row(e) for e in reversed(rows)]),
        hide_index=True,
        key="ledger_table",
        on_select="rerun",
        selection_mode="single-row",
    )
    selected = getattr(getattr(picked, "selection", None), "rows", [])
    if selected:
        state.open_entry(int(list(reversed(rows))[selected[0]]["seq"]))

left, right = st.columns([1, 3])
seq = left.number_input(
    "Entry seq", min_value=0, max_value=max(0, size - 1), value=max(0, size - 1), key="ledger_seq"
)
if left.button("Open entry", key="ledger_open", type="primary"):
    state.open_entry(int(seq))
