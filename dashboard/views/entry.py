"""One ledger entry: its JSON, its hash-chain neighbours, and its RFC 6962 inclusion proof
checked here against the checkpoint this session trusts."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from controlplane.client.api import ApiError
from controlplane.client.verify import check_inclusion
from controlplane.ledger.entry import GENESIS_HASH, Entry
from controlplane.ledger.errors import LedgerError
from dashboard import data, state

api = state.api()
raw = st.query_params.get("seq", "")
if not raw.isdigit():
    st.title("Ledger entry")
    st.info("Open an entry from the Ledger page.")
    st.stop()
seq = int(raw)
st.title(f"Ledger entry {seq}")

try:
    entry = api.get(f"/v1/ledger/entries/{seq}")
    before = data.optional(api, f"/v1/ledger/entries/{seq - 1}") if seq > 0 else None
    after = data.optional(api, f"/v1/ledger/entries/{seq + 1}")
except ApiError as exc:
    state.show_api_error(exc, f"Entry {seq}")
    st.stop()

st.caption(
    f"{entry['action']} by **{entry['actor']}** at {entry['timestamp']} · "
    f"{data.subject_label(entry['subject'])}"
)
try:
    intact = Entry.from_dict(entry).hash_is_valid()
except LedgerError as exc:
    intact = False
    st.error(f"The entry is malformed: {exc}")
if intact:
    st.success("entry_hash recomputed here from the fields below: it matches.")
else:
    st.error("entry_hash does NOT match the entry's fields.")
st.json(entry)

st.subheader("Hash chain")
expected_prev = GENESIS_HASH if before is None and seq == 0 else (before or {}).get("entry_hash")
links = [
    {
        "link": f"{seq - 1} -> {seq}" if seq > 0 else "genesis -> 0",
        "prev_hash of this entry": entry["prev_hash"],
        "entry_hash before it": expected_prev or "(not served)",
        "holds": "yes" if entry["prev_hash"] == expected_prev else "NO",
    }
]
if after is not None:
    links.append(
        {
            "link": f"{seq} -> {seq + 1}",
            "prev_hash of this entry": after["prev_hash"] + " (of the next)",
            "entry_hash before it": entry["entry_hash"],
            "holds": "yes" if after["prev_hash"] == entry["entry_hash"] else "NO",
        }
    )
st.table(pd.DataFrame(links), hide_index=True)
left, right = st.columns(2)
if before is not None and left.button(f"← entry {seq - 1} ({before['action']})", key="entry_prev"):
    state.open_entry(seq - 1)
if after is not None and right.button(f"entry {seq + 1} ({after['action']}) →", key="entry_next"):
    state.open_entry(seq + 1)

st.subheader("Inclusion proof")
try:
    checkpoint, trust = state.session_checkpoint()
except (ApiError, LedgerError, ValueError) as exc:
    st.error(f"No trusted checkpoint: {exc}")
    st.stop()
st.caption(f"Checked against {trust}: size {checkpoint.size}, root {checkpoint.root_hash.hex()}")
if seq >= checkpoint.size:
    st.warning(
        f"Entry {seq} is newer than the checkpoint this session trusts (size {checkpoint.size})."
    )
    if st.button("Fetch the latest signed checkpoint", key="entry_refresh"):
        state.forget_checkpoint()
        st.rerun()
    st.stop()
try:
    proof = check_inclusion(api, seq, checkpoint)
except LedgerError as exc:
    st.error(f"The inclusion proof FAILS: {exc}")
    st.stop()
except ApiError as exc:
    state.show_api_error(exc, "Inclusion proof")
    st.stop()
st.success(
    f"Entry {seq} is in the signed tree of {checkpoint.size} entries: the audit path of "
    f"{len(proof['hashes'])} hashes leads from its leaf to the signed root (RFC 6962)."
)
st.dataframe(
    pd.DataFrame(
        [{"step": "leaf", "hash": proof["leaf_hash"]}]
        + [{"step": str(i), "hash": h} for i, h in enumerate(proof["hashes"])]
        + [{"step": "root", "hash": checkpoint.root_hash.hex()}]
    ),
    hide_index=True,
    key="entry_proof",
)
