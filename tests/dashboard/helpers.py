"""Driving the dashboard in-process with Streamlit's AppTest, signed in over the real API."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
TIMEOUT = 60


def signed_in(url: str, token: str) -> AppTest:
    """The app after signing in through its own form, on the default page (Overview)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    at.text_input(key="login_url").input(url)
    at.text_input(key="login_token").input(token)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert "cp_me" in at.session_state, [e.value for e in at.error]
    return at


def open_page(at: AppTest, page: str, **query: str) -> AppTest:
    """Switch to ``views/<page>.py`` with query parameters, as a link in the app would."""
    at.query_params.clear()
    at.query_params.update(query)
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> str:
    """Everything the page wrote, for plain assertions."""
    parts = [e.value for e in (*at.markdown, *at.title, *at.subheader, *at.caption)]
    parts += [e.value for e in (*at.success, *at.info, *at.warning, *at.error)]
    return "\n".join(str(p) for p in parts)


def frame(at: AppTest, column: str, nth: int = 0) -> pd.DataFrame:
    """The ``nth`` dataframe or table on the page that has ``column`` (or an index of it)."""
    found = [
        e.value
        for e in (*at.dataframe, *at.table)
        if column in e.value.columns or column in (e.value.index.names or [])
    ]
    assert len(found) > nth, f"no table with a {column!r} column"
    return found[nth]
