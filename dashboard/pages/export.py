"""Export: the CSV report, a Shopify-style product CSV, a Google Merchant Center feed (TSV) and a WooCommerce
product CSV, filtered by batch and status (the same four files as `python -m pipeline export`)."""

from __future__ import annotations

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_runtime
from dashboard.text import inert
from pipeline.admin.taxonomy import current_schema
from pipeline.batches.export import filter_items
from pipeline.batches.feeds import FORMAT_LABELS, export_file

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
store, schema = runtime.stages.store, current_schema(runtime.stages)  # the active taxonomy's columns

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
files = {fmt: export_file(fmt, items, schema, name=f"batch-{name}-{which}", excel_bom=excel and fmt == "report")
         for fmt in ("report", "shopify", "google-merchant", "woocommerce")}
tagged = any(item.status == "ok" for item in items)  # the product files list tagged items only
for row in (("report", "shopify"), ("google-merchant", "woocommerce")):
    for column, fmt in zip(st.columns(2), row):
        column.download_button(f"Download {FORMAT_LABELS[fmt]}", files[fmt].data, file_name=files[fmt].file_name, mime=files[fmt].mime,
                               type="primary" if fmt == "report" else "secondary", disabled=not (items if fmt == "report" else tagged),
                               key=f"download-{fmt}")
notices = {fmt: files[fmt].notices for fmt in ("google-merchant", "woocommerce") if files[fmt].notices}
if notices and tagged:
    with st.expander("What the product feeds lack (left empty or left out, never made up)"):
        for fmt, lines in notices.items():
            st.markdown(f"**{FORMAT_LABELS[fmt]}**")
            for line in lines:
                st.caption(inert(line))
