"""Admin → Health: throughput, stage latency, failure reasons, caption cache and endpoint history over
a chosen period (pipeline.admin.analytics reads the store; this page only draws)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.components import chart_text, period_figures, store_problem
from dashboard.runtime import current_user, get_runtime, require_admin
from dashboard.text import say
from pipeline.admin import analytics
from pipeline.observability import registry

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
store = runtime.stages.store


def number(value: float | None, suffix: str = "", digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


st.title("Health")
choice = st.selectbox("Period", list(analytics.PERIODS), index=1, key="health-period")
if st.button("Refresh", key="health-refresh"):
    st.session_state.pop("health-data", None)
try:
    since, until, health = period_figures("health-data", choice, lambda since, until: analytics.health(store, since, until))
except Exception as error:  # the store unreachable: say so in one sentence
    st.error(say("Could not read the store: {why}", why=store_problem(error, runtime.settings.aws_region)))
    st.stop()
st.caption(say("{since} to {until} UTC, from the store (every dashboard task and the CLI write there).",
               since=f"{since:%Y-%m-%d %H:%M}", until=f"{until:%Y-%m-%d %H:%M}"))

processed, per_hour, per_day, failure, cache, uptime = st.columns(6)
processed.metric("Items processed", f"{health.processed:,}")
per_hour.metric("Items per hour", number(health.per_hour, digits=1))
per_day.metric("Items per day", number(health.per_day, digits=1))
failure.metric("Failed", number(None if health.failure_rate is None else 100 * health.failure_rate, " %", 1),
               help=f"{health.failed:,} of {health.processed:,} items")
cache.metric("Caption cache hit rate", number(None if health.cache.hit_rate is None else 100 * health.cache.hit_rate, " %", 1),
             help=f"{health.cache.hits:,} of {health.cache.captioned:,} captions came from the cache "
                  f"({health.cache.paid_calls:,} paid caption calls in the usage ledger).")
uptime.metric("Endpoint running (h)", number(health.endpoint.running_hours, digits=1), help="From the audit log's start / stop entries.")

st.subheader("Throughput")
frame = pd.DataFrame([{"time": p.start, "outcome": outcome, "items": n} for p in health.throughput
                      for outcome, n in (("ok", p.ok), ("failed", p.failed))])
if not health.processed:
    st.info("No items were processed in this period.")
else:
    st.plotly_chart(px.bar(frame, x="time", y="items", color="outcome", title=f"Items per {health.bucket} (UTC)",
                           color_discrete_map={"ok": "#2e7d32", "failed": "#c62828"}), key="throughput")

st.subheader("Time per stage")
if health.stages:
    stages = pd.DataFrame([{"stage": chart_text(s.stage), "percentile": name, "ms": value}
                           for s in health.stages for name, value in (("p50", s.p50_ms), ("p95", s.p95_ms))])
    st.plotly_chart(px.bar(stages, x="stage", y="ms", color="percentile", barmode="group", title="p50 / p95 per stage (ms)"),
                    key="stages")
    st.dataframe([{"Stage": s.stage, "Items": s.count, "p50 (ms)": s.p50_ms, "p95 (ms)": s.p95_ms} for s in health.stages],
                 hide_index=True, width="stretch")
    st.caption(say("Timings from {with_timings} of {processed} items (items processed before timings were recorded have none).",
                   with_timings=health.items_with_timings, processed=health.processed))
else:
    st.info("No stage timings were recorded in this period.")

st.subheader("Failure reasons")
if health.failures:
    failures = pd.DataFrame([{"reason": chart_text(f.error_kind), "items": f.count} for f in health.failures])
    st.plotly_chart(px.bar(failures, x="items", y="reason", orientation="h", title="Failed items by reason"), key="failures")
    st.dataframe([{"Reason": f.error_kind, "Items": f.count, "Example (newest)": f.example, "Item id": f.example_item_id}
                  for f in health.failures], hide_index=True, width="stretch")
else:
    st.info("No failed items in this period.")

st.subheader("Endpoint")
history = health.endpoint
steps = pd.DataFrame([{"time": moment, "running": 1 if state == "running" else 0, "state": state}
                      for moment, state in history.timeline(since, until)])
st.plotly_chart(px.line(steps, x="time", y="running", line_shape="hv", hover_data=["state"],
                        title="Endpoint running (1) or stopped (0), from the audit log"), key="endpoint")
st.caption(say("At the start of the period: {state}.", state=history.state_at_start))
if history.events:
    st.dataframe([{"When (UTC)": f"{e.at:%Y-%m-%d %H:%M:%S}", "Who": e.who, "Action": e.action, "Result": e.result,
                   "Endpoint after": e.state, "Detail": e.detail} for e in reversed(history.events)],
                 hide_index=True, width="stretch")
else:
    st.info("No endpoint start or stop in this period.")

with st.expander("This dashboard process since it started (in-memory metrics)"):
    snapshot = registry().snapshot() if registry() is not None else {"counters": [], "histograms": []}
    st.caption("What this server process measured itself (the figures above come from the store and cover every task).")
    if snapshot["counters"] or snapshot["histograms"]:
        st.dataframe([{"Counter": c["name"], "Dimensions": ", ".join(f"{k}={v}" for k, v in c["dimensions"].items()),
                       "Value": c["value"]} for c in snapshot["counters"]], hide_index=True, width="stretch")
        st.dataframe([{"Latency": h["name"], "Dimensions": ", ".join(f"{k}={v}" for k, v in h["dimensions"].items()),
                       "Samples": h["count"], "p50 (ms)": h["p50"], "p95 (ms)": h["p95"], "Max (ms)": h["max"]}
                      for h in snapshot["histograms"]], hide_index=True, width="stretch")
    else:
        st.info("Nothing measured in this process yet.")
