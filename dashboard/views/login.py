"""Sign in with an API token; the dashboard keeps it in this browser session only."""

from __future__ import annotations

import streamlit as st

from controlplane.client.api import ApiError
from dashboard import state

st.title("controlplane")
st.write(
    "Governance and audit of the RLHF pipeline: which data, rubric and sign-offs are behind "
    "each model, and proof that the record is intact. Sign in with your API token "
    "(`controlplane principal create` or `controlplane serve` prints one)."
)
defaults = state.settings()
with st.form("login"):
    url = st.text_input("API address", value=defaults.url, key="login_url")
    token = st.text_input("Token", value=defaults.token or "", type="password", key="login_token")
    submitted = st.form_submit_button("Sign in", type="primary")
if submitted:
    if not token.strip():
        st.error("Enter a token.")
    else:
        try:
            who = state.sign_in(url, token)
        except ApiError as exc:
            st.error(f"Sign-in failed: {exc.detail}")
        else:
            st.success(f"Signed in as {who['id']}")
            st.rerun()
