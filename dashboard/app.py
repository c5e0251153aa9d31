"""Entry point of the dashboard: sign-in gate and the page list.

``streamlit run dashboard/app.py`` (``controlplane serve`` starts it beside the API). The
checkout root goes on ``sys.path`` so the pages can import ``dashboard`` and ``controlplane``
however Streamlit was started.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402

st.set_page_config(page_title="controlplane", page_icon=":material/verified:", layout="wide")


def _page(name: str, title: str, icon: str, **kwargs: object) -> st.Page:
    return st.Page(HERE / "views" / f"{name}.py", title=title, icon=icon, **kwargs)  # type: ignore[arg-type]


if not state.signed_in():
    page = st.navigation([_page("login", "Sign in", ":material/login:", default=True)])
else:
    state.sidebar()
    page = st.navigation(
        {
            "Review": [
                _page("overview", "Overview", ":material/dashboard:", default=True),
                _page("artifacts", "Artifacts", ":material/inventory_2:"),
                _page("version", "Version", ":material/account_tree:", visibility="hidden"),
                _page("approvals", "Approvals", ":material/approval:"),
                _page("evaluations", "Evaluations", ":material/monitoring:"),
            ],
            "Audit": [
                _page("ledger", "Ledger", ":material/receipt_long:"),
                _page("entry", "Ledger entry", ":material/tag:", visibility="hidden"),
                _page("audit", "Audit export", ":material/download:"),
            ],
        }
    )
page.run()
