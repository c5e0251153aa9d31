"""The signed-in session: who, which server, which project, and what it verified.

The token lives in ``st.session_state`` of one browser session only (never in the URL or on
disk). Every call goes through :func:`api`, an :class:`ApiClient` with that token, so what a
user sees and may do is decided by the API's RBAC, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import streamlit as st

from controlplane.client.api import ApiClient, ApiError
from controlplane.client.verify import MemoryPins, signed_checkpoint
from controlplane.config import DEFAULT_PROJECT, Settings
from controlplane.ledger.checkpoint import Checkpoint, NoteVerifier
from controlplane.registry.refs import VersionRef
from dashboard import data

T = TypeVar("T")
VERSION_PAGE = "views/version.py"
ENTRY_PAGE = "views/entry.py"


@st.cache_resource
def settings() -> Settings:
    """URL and token defaults for the sign-in form (CONTROLPLANE_URL, CONTROLPLANE_TOKEN)."""
    return Settings()


def signed_in() -> bool:
    return "cp_me" in st.session_state


def sign_in(url: str, token: str) -> dict[str, Any]:
    """Check the token against the server (``/v1/whoami``) and keep it for this session."""
    client = ApiClient(url.strip(), token.strip(), timeout=120)
    try:
        me = client.get("/v1/whoami")
    except ApiError:
        client.close()
        raise
    sign_out()
    st.session_state["cp_api"] = client
    st.session_state["cp_me"] = me
    st.session_state["cp_pins"] = MemoryPins()
    st.session_state["cp_projects_seen"] = _recent_projects(client)
    return dict(me)


def _recent_projects(client: ApiClient) -> list[str]:
    """Projects named in the ledger's last entries, most recent first (none if not allowed)."""
    try:
        size = data.ledger_size(client)
        tail = client.get("/v1/ledger/entries", start=max(0, size - 5000), limit=5000)["data"]
    except ApiError:
        return []
    named = [e["subject"].get("project") for e in reversed(tail)]
    return [str(p) for p in dict.fromkeys(named) if p]


def sign_out() -> None:
    client = st.session_state.get("cp_api")
    if client is not None:
        client.close()
    for key in [k for k in st.session_state if str(k).startswith("cp_")]:
        del st.session_state[key]


def api() -> ApiClient:
    return st.session_state["cp_api"]  # type: ignore[no-any-return]


def me() -> dict[str, Any]:
    return st.session_state["cp_me"]  # type: ignore[no-any-return]


def pins() -> MemoryPins:
    return st.session_state["cp_pins"]  # type: ignore[no-any-return]


def projects() -> list[str]:
    seen = st.session_state.get("cp_projects_seen", [])
    found = data.projects_of(me(), seen)
    return found or [DEFAULT_PROJECT]


def project() -> str:
    """The project chosen in the sidebar (a ``project`` query parameter wins)."""
    wanted = st.query_params.get("project")
    if wanted:
        remember_project(wanted)
        st.session_state["cp_project"] = wanted
    choices = projects()
    current = st.session_state.get("cp_project")
    if current not in choices:
        current = choices[0]
        st.session_state["cp_project"] = current
    return str(current)


def remember_project(name: str) -> None:
    seen = st.session_state.setdefault("cp_projects_seen", [])
    if name and name not in seen:
        seen.append(name)


def sidebar() -> None:
    who = me()
    with st.sidebar:
        st.markdown(
            f"**{who['id']}**  \n"
            + ", ".join(f"{g['role']}@{g['project']}" for g in who.get("roles", []))
        )
        st.caption(api().url)
        choices = projects()
        current = project()
        picked = st.selectbox(
            "Project", choices, index=choices.index(current), key="cp_project_picker"
        )
        if picked != current:
            st.session_state["cp_project"] = picked
            if "project" in st.query_params:
                del st.query_params["project"]
            st.rerun()
        other = st.text_input("Another project", key="cp_project_other", placeholder="name")
        if other and other not in choices:
            remember_project(other)
            st.session_state["cp_project"] = other
            st.rerun()
        if st.button("Sign out", key="cp_sign_out"):
            sign_out()
            st.rerun()


def session_checkpoint() -> tuple[Checkpoint, str]:
    """The checkpoint this session trusts, and how it came to trust it.

    After a full verification in this session (Overview), the checkpoint pinned then; before,
    the latest signed checkpoint, its signature checked against the served keys.
    """
    held = st.session_state.get("cp_checkpoint")
    if held is None:
        _, checkpoint = signed_checkpoint(api())
        held = (checkpoint, "the latest signed checkpoint (signature checked)")
        st.session_state["cp_checkpoint"] = held
    checkpoint = held[0]
    pinned = pins().get(checkpoint.origin)
    if pinned is not None and pinned.size >= checkpoint.size:
        verifiers = [NoteVerifier.parse(v) for v in pinned.verifiers]
        return Checkpoint.open(pinned.note, verifiers), "pinned by the full verification run here"
    return held  # type: ignore[no-any-return]


def forget_checkpoint() -> None:
    st.session_state.pop("cp_checkpoint", None)


def show_api_error(exc: ApiError, what: str) -> None:
    if exc.status in (401, 403):
        st.warning(f"{what}: not allowed for {me()['id']} ({exc.detail})")
    elif exc.status == 0:
        st.error(f"{what}: the API cannot be reached ({exc.detail})")
    else:
        st.error(f"{what}: {exc.detail}")


def attempt(what: str, call: Callable[[], T], default: T) -> T:
    """``call()``, or ``default`` after saying why on the page when the API refuses or fails:
    a page shows what the user may see rather than failing as a whole."""
    try:
        return call()
    except ApiError as exc:
        show_api_error(exc, what)
        return default


def open_version(project_name: str, ref: str | VersionRef) -> NoReturn:
    st.switch_page(VERSION_PAGE, query_params={"project": project_name, "ref": str(ref)})


def open_entry(seq: int) -> NoReturn:
    st.switch_page(ENTRY_PAGE, query_params={"seq": str(seq)})
