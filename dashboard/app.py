"""Streamlit entry point: page setup and routing only (pages live in dashboard/pages/)."""

import streamlit as st

from dashboard.navigation import navigation_from_app_only
from dashboard.runtime import current_user, get_runtime
from dashboard.text import say


navigation_from_app_only()
st.set_page_config(page_title="Product tagger", page_icon=":material/sell:", layout="wide")

user = current_user(get_runtime())
if user.dev_mode:
    st.warning(say("Local dev mode: single user **{email}**" + (" (admin)" if user.is_admin else "") + "; no sign-in. "
                   "Set AUTH_MODE=alb behind the load balancer.", email=user.email), icon=":material/construction:")

pages = [
    st.Page("pages/tag.py", title="Tag", icon=":material/sell:", default=True),
    st.Page("pages/review.py", title="Review", icon=":material/edit:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
    # Always registered, so /admin is a known page for everyone: left out for a non-admin, the URL was "page not
    # found" and the sidebar fell back to the pages/ folder's raw list. Hidden from a non-admin's menu; the page
    # itself refuses anyone who is not an admin (require_admin).
    st.Page("pages/admin.py", title="Admin", icon=":material/settings:", visibility="visible" if user.is_admin else "hidden"),
    st.Page("pages/health.py", title="Health", icon=":material/monitor_heart:", visibility="visible" if user.is_admin else "hidden"),
    st.Page("pages/quality.py", title="Quality", icon=":material/fact_check:", visibility="visible" if user.is_admin else "hidden"),
    st.Page("pages/brand.py", title="Brand voice", icon=":material/record_voice_over:", visibility="visible" if user.is_admin else "hidden"),
    st.Page("pages/compare.py", title="Compare captioners", icon=":material/compare:", visibility="visible" if user.is_admin else "hidden"),
    st.Page("pages/taxonomy.py", title="Taxonomy", icon=":material/category:", visibility="visible" if user.is_admin else "hidden"),
]
st.navigation(pages).run()
