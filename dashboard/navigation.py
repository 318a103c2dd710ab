"""Only app.py's st.navigation builds the menu (issue 16 item 8).

dashboard/pages/ sits next to app.py, so Streamlit also runs its old folder-based navigation: it sends
the folder's raw lowercase list (app, admin, export, ...) as the sidebar and runs a page file directly,
without app.py. Both helpers turn that off through a Streamlit-internal flag; if the flag ever
disappears, nothing changes.
"""

from __future__ import annotations

import streamlit as st


def _pages_manager():
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without it has no folder fallback to undo
        return None
    return PagesManager


def navigation_from_app_only() -> None:
    """In app.py: turn the folder fallback off for the server process and start this run again under st.navigation."""
    manager = _pages_manager()
    if manager is not None and getattr(manager, "uses_pages_directory", False):
        manager.uses_pages_directory = False
        st.rerun()
    st.session_state["navigation_ready"] = True  # this session has run through st.navigation


def restart_through_app_if_opened_directly() -> None:
    """In a page: opened as a file of the pages/ folder (a typed or bookmarked URL on a fresh server), not
    through app.py — start again through it. A session's first run only, so no click is lost.
    dashboard.runtime.current_user() calls it, which every page does before drawing anything."""
    manager = _pages_manager()
    if manager is not None and getattr(manager, "uses_pages_directory", False):
        manager.uses_pages_directory = False
        if "navigation_ready" not in st.session_state:
            st.rerun()
