"""Admin: endpoint control and costs arrive with the admin issue; for now, the current setup."""

from __future__ import annotations

import streamlit as st

from dashboard.runtime import current_user, get_runtime, require_admin

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation

settings = runtime.settings
st.title("Admin")
st.info("Endpoint start/stop, auto-stop and the cost estimator are not built yet (admin issue).")
st.write({
    "captioner": settings.captioner,
    "caption model": settings.caption_model if settings.captioner == "local" else settings.sagemaker_endpoint,
    "summarizer": settings.summarizer,
    "region": settings.aws_region,
    "instance type": settings.sagemaker_instance_type,
})
