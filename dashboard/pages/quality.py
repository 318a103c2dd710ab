"""Admin → Quality: how much of each field people accepted unchanged, edited or rejected, by model and
by category, and the most common edits (pipeline.admin.analytics reads the store; this page only draws)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.components import chart_text, period_figures, store_problem
from dashboard.runtime import current_user, get_runtime, require_admin
from dashboard.text import say
from pipeline.admin import analytics
from pipeline.admin.analytics import FieldQuality

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
store = runtime.stages.store
OUTCOMES = (("accepted", "Accepted unchanged"), ("edited", "Edited"), ("rejected", "Rejected"))
COLORS = {"Accepted unchanged": "#2e7d32", "Edited": "#f9a825", "Rejected": "#c62828"}


def percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def table(rows: list[FieldQuality], group_label: str | None) -> list[dict]:
    return [{**({group_label: r.group} if group_label else {}), "Field": r.field, "Reviewed": r.reviewed,
             **{f"{label} %": percent(r.share(outcome)) for outcome, label in OUTCOMES}, "Awaiting review": r.awaiting}
            for r in rows]


def shares_chart(rows: list[FieldQuality], x: str, title: str, key: str) -> None:
    frame = pd.DataFrame([{x: chart_text(r.field if x == "field" else r.group), "outcome": label, "share %": percent(r.share(outcome))}
                          for r in rows if r.reviewed for outcome, label in OUTCOMES])
    if frame.empty:
        st.info("Nothing reviewed yet for this choice.")
        return
    st.plotly_chart(px.bar(frame, x=x, y="share %", color="outcome", title=chart_text(title), color_discrete_map=COLORS,
                           range_y=[0, 100]), key=key)


st.title("Quality")
choice = st.selectbox("Period (items tagged in it)", list(analytics.PERIODS), index=2, key="quality-period")
if st.button("Refresh", key="quality-refresh"):
    st.session_state.pop("quality-data", None)
try:
    since, until, quality = period_figures("quality-data", choice, lambda since, until: analytics.quality(
        store, since, until, seo_fields_by=runtime.settings.seo_fields_by))
except Exception as error:  # the store unreachable: say so in one sentence
    st.error(say("Could not read the store: {why}", why=store_problem(error, runtime.settings.aws_region)))
    st.stop()
st.caption(say("Items tagged {since} to {until} UTC and what reviewers did with them. Accepted: approved with the model's "
               "value; edited: a person changed it; rejected: the item was rejected. Shares are of reviewed items.",
               since=f"{since:%Y-%m-%d %H:%M}", until=f"{until:%Y-%m-%d %H:%M}"))

overall = {r.field: r for r in quality.by_field}
tagged, reviewed, caption_ok, summary_ok = st.columns(4)
tagged.metric("Items tagged", f"{quality.items:,}")
reviewed.metric("Reviewed", f"{max((r.reviewed for r in quality.by_field), default=0):,}")
for column, name in ((caption_ok, "caption"), (summary_ok, "summary")):
    share = overall[name].share("accepted") if name in overall else None
    column.metric(f"{name.capitalize()} accepted unchanged", "—" if share is None else f"{100 * share:.1f} %")

if not quality.items:
    st.info("No items were tagged in this period.")
    st.stop()

st.subheader("By field")
shares_chart(quality.by_field, "field", "Accepted, edited, rejected per field", "by-field")
st.dataframe(table(quality.by_field, None), hide_index=True, width="stretch")

fields = [r.field for r in quality.by_field]
field_name = st.selectbox("Field to compare", fields, key="quality-field")

st.subheader("By model")
st.caption(say("Caption and attributes by captioning model (revision as recorded); title, summary, summaries in other "
               "languages and tags by summary model; SEO title, meta description and alt text by {seo}.",
               seo="the summary model (SEO_FIELDS_BY=model)" if runtime.settings.seo_fields_by == "model"
               else "the offline template (SEO_FIELDS_BY=template; the summary model does not write them)"))
shares_chart([r for r in quality.by_model if r.field == field_name], "model", f"{field_name} by model", "by-model")
st.dataframe(table([r for r in quality.by_model if r.field == field_name], "Model"), hide_index=True, width="stretch")

st.subheader("By category")
st.caption("The CSV's category column, else the item's category attribute.")
shares_chart([r for r in quality.by_category if r.field == field_name], "category", f"{field_name} by category", "by-category")
st.dataframe(table([r for r in quality.by_category if r.field == field_name], "Category"), hide_index=True, width="stretch")

st.subheader("Most common edits")
if quality.common_edits:
    st.dataframe([{"Field": e.field, "From": e.old, "To": e.new, "Times": e.count} for e in quality.common_edits],
                 hide_index=True, width="stretch")
else:
    st.info("No edits in this period.")
