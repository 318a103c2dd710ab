"""Admin → Compare captioners: the configured captioner (BLIP-2 / BLIP) and the vision LLM on a sample of one
batch's photos — cost per photo, latency p50/p95, acceptance from the quality analytics, and each photo's
captions side by side (pipeline.batches.comparison does the work; this page only asks and draws)."""

from __future__ import annotations

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_runtime, require_admin
from dashboard.text import say
from pipeline.batches.comparison import MAX_SAMPLE, captioners_to_compare, compare_captioners, report_table
from pipeline.admin.costs import PriceTable
from pipeline.errors import describe_error

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
settings = runtime.settings
stages = runtime.stages

st.title("Compare captioners")
st.caption(say("Both captioners caption the same photos of one batch: {first} and the vision model {vision}. The items keep "
               "their results; the vision model's calls are paid at OpenAI's token prices and recorded in the cost ledger.", first=settings.captioner, vision=settings.openai_vision_model))

try:
    batches = stages.store.list_batches()
except Exception as error:  # the store unreachable: one sentence
    st.error(say("Could not read the store: {why}", why=describe_error(error)))
    st.stop()
if not batches:
    st.info("There are no batches yet: tag some photos first.")
    st.stop()

labels = {b.id: f"#{b.id} {b.name}" for b in batches}  # selectbox options are plain text
batch_id = st.selectbox("Batch", list(labels), format_func=lambda i: labels[i], key="compare-batch")
sample = st.number_input("Photos in the sample", min_value=1, max_value=MAX_SAMPLE, value=min(10, MAX_SAMPLE), step=1, key="compare-sample")

if st.button("Compare", type="primary", key="compare-run"):
    try:
        with st.spinner("Captioning the sample with both captioners…"):
            comparison = compare_captioners(stages, int(batch_id), int(sample), captioners_to_compare(settings, stages.store, stages.captioner),
                                            PriceTable.load(settings.prices_file), instance_type=settings.sagemaker_instance_type)
        st.session_state["compare-result"] = comparison
    except Exception as error:
        st.session_state.pop("compare-result", None)
        st.error(say("The comparison could not run: {why}", why=describe_error(error)))

comparison = st.session_state.get("compare-result")
if comparison is None or comparison.batch_id != batch_id:
    st.stop()

st.subheader("Per captioner")
st.dataframe(report_table(comparison), hide_index=True, width="stretch")  # cells are plain text
for report in comparison.reports:
    st.caption(say("**{label}** — cost: {basis} Acceptance: {note}", label=report.label, basis=report.cost_basis,
                   note=report.acceptance_note))
for note in comparison.notes:
    st.info(say("{note}", note=note))

st.subheader("Each photo")
labels_in_order = [r.label for r in comparison.reports]
st.dataframe(
    [{"#": row.seq + 1, "Photo": row.source, "Stored caption": row.stored_caption or "",
      **{label: row.captions.get(label) if row.captions.get(label) is not None else f"failed: {row.errors.get(label, '')}"
         for label in labels_in_order}}
     for row in comparison.rows],
    hide_index=True, width="stretch",
)
