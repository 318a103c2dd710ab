"""Export: the CSV report and a Shopify-style product CSV, filtered by batch and status."""

from __future__ import annotations

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_runtime
from pipeline.batches.export import export_csv, export_shopify_csv, filter_items

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
store, schema = runtime.stages.store, runtime.stages.schema

st.title("Export")
batches = store.list_batches()
if not batches:
    st.info("No batches yet: tag some photos first.")
    st.stop()
labels = {b.id: f"{b.name} (#{b.id})" for b in batches}
default = [st.session_state["batch_id"]] if st.session_state.get("batch_id") in labels else [batches[0].id]
chosen = st.multiselect("Batches", list(labels), default=default, format_func=labels.get)
which = st.radio("Items", ["approved", "all", "failed"], horizontal=True,
                 format_func={"approved": "Approved", "all": "All", "failed": "Failed only"}.get)
excel = st.checkbox("For Excel (adds a UTF-8 marker so accents display correctly)")

items = filter_items([item for batch_id in chosen for item in store.list_items(batch_id)], which)
st.caption(f"{len(items)} item{'s' * (len(items) != 1)} selected.")
name = "-".join(str(batch_id) for batch_id in chosen) or "none"
report, shopify = st.columns(2)
report.download_button("Download CSV report", export_csv(items, schema, excel_bom=excel), file_name=f"tags-batch-{name}-{which}.csv",
                       mime="text/csv", type="primary", disabled=not items)
shopify.download_button("Download Shopify product CSV", export_shopify_csv(items), file_name=f"shopify-batch-{name}-{which}.csv",
                        mime="text/csv", disabled=not any(item.status == "ok" for item in items))
