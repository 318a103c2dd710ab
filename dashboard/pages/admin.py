"""Admin: the endpoint switch (with confirmation and audit log), month-to-date cost and the what-if estimator."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.runtime import current_user, get_endpoint_controller, get_runtime, require_admin
from dashboard.text import inert, say
from pipeline.admin.costs import (PROFILES, QUOTED_SUFFIX, REFERENCE_PRICES, SEO_FIELDS_BY, SUMMARY_MODES, Assumptions, PriceTable, break_even_points,
                                  cost_lines, estimate_monthly_cost, month_to_date, profile_assumptions)
from pipeline.admin.endpoint import NO_ENDPOINT, Actor, NotAllowed, aws_problem, aws_setup_problem
from pipeline.errors import describe_error

restart_through_app_if_opened_directly()

runtime = get_runtime()
user = current_user(runtime)
require_admin(user)  # on every run, not only in the navigation
settings, store = runtime.settings, runtime.stages.store
actor = Actor(user.email, user.is_admin)
prices = PriceTable.load(settings.prices_file)
assumptions = profile_assumptions(settings.deployment_profile, Assumptions(instance_type=settings.sagemaker_instance_type))
STATE_LABELS = {"not_deployed": "not deployed", "in_service": "in service"}


def plain(error: Exception) -> str:
    """One sentence for an AWS or other error (what to configure, when it is configuration)."""
    return aws_problem(error, settings.aws_region) or (str(error).splitlines()[0] if str(error) else describe_error(error))


def endpoint_status():
    try:
        return get_endpoint_controller().status(), None
    except Exception as error:  # AWS unreachable, access denied, throttling, ...: say so, keep the page
        return None, say("Endpoint status unavailable: {why}", why=plain(error))


def setup_problem() -> str | None:
    """No region or credentials: checked once per session (a credential lookup may wait on the network)."""
    if "aws_setup_problem" not in st.session_state:
        st.session_state["aws_setup_problem"] = aws_setup_problem(settings)
    return st.session_state["aws_setup_problem"]


CAPTIONERS_WITHOUT_ENDPOINT = ("local", "openai-vision")  # caption without a SageMaker endpoint


def captioner_in_use(settings) -> str:
    """One sentence (inert) on the configured captioner that needs no endpoint."""
    if settings.captioner == "openai-vision":
        return say("Photos are captioned by OpenAI's vision model {model} (CAPTIONER={captioner}, OPENAI_VISION_MODEL), billed by tokens.",
                   model=settings.openai_vision_model, captioner=settings.captioner)
    return say("Photos are captioned on this machine (CAPTIONER={captioner}, CAPTION_MODEL {model}).",
               captioner=settings.captioner, model=settings.caption_model)


def render_local_mode(why: str) -> None:
    """What runs here and what to set to manage a SageMaker endpoint from this page."""
    with st.container(border=True):
        st.markdown(say("**Local mode**: {why}", why=why))
        st.markdown(captioner_in_use(settings) + " There is no endpoint to start or stop from here."
                    if settings.captioner in CAPTIONERS_WITHOUT_ENDPOINT else
                    say("This dashboard is set to caption through the endpoint (CAPTIONER={captioner}), but cannot reach it.",
                        captioner=settings.captioner))
        st.markdown("To manage a captioning endpoint here, set these (environment or `.env`) and restart the dashboard:")
        st.dataframe([
            {"Setting": "CAPTIONER", "Now": settings.captioner, "Set to": "sagemaker (real-time endpoint) or sagemaker-async"},
            {"Setting": "SAGEMAKER_ENDPOINT", "Now": settings.sagemaker_endpoint, "Set to": "the endpoint's name (sagemaker/deploy.py creates it)"},
            {"Setting": "SAGEMAKER_MODE", "Now": settings.sagemaker_mode, "Set to": "realtime or async, as deployed"},
            {"Setting": "AWS_REGION", "Now": settings.aws_region or "(not set)", "Set to": "the endpoint's region"},
            {"Setting": "AWS credentials", "Now": "missing" if "credentials" in why else "found",
             "Set to": "AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; on AWS, the task role"},
            {"Setting": "SAGEMAKER_ASYNC_S3", "Now": settings.sagemaker_async_s3 or "(not set)", "Set to": "s3://bucket/prefix, for sagemaker-async"},
            {"Setting": "SAGEMAKER_TRANSFORM_S3", "Now": settings.sagemaker_transform_s3 or "(not set)", "Set to": "s3://bucket/prefix, for batch jobs"},
        ], hide_index=True, width="stretch")


def act(action: str) -> None:
    control = get_endpoint_controller()
    try:
        result = control.start(actor) if action == "start" else control.stop(actor)
    except NotAllowed as error:
        st.error(inert(error))
        return
    except Exception as error:
        store.add_audit(actor.who, action, "error", str(error).splitlines()[0][:300])
        st.error(say(f"Could not {action} the endpoint: {{why}}", why=plain(error)))
        return
    (st.success if result.changed else st.info)(say(f"{action.capitalize()}: {{result}}. {{message}}", result=result.result, message=result.message))


def render_endpoint_card() -> bool:
    st.subheader("Captioning endpoint")
    if not settings.endpoint_enabled:  # a batch-transform-only deployment: nothing to start, stop or read (no permissions)
        st.info(inert(NO_ENDPOINT))
        return False
    why = setup_problem()
    if why:
        render_local_mode(why)
        return False
    status, problem = endpoint_status()
    if problem:
        st.warning(problem)
        render_local_mode("the endpoint's status cannot be read with this configuration.")
        return False
    if settings.captioner in CAPTIONERS_WITHOUT_ENDPOINT:
        st.caption(captioner_in_use(settings) + " The endpoint below is managed, not used, here.")
    label = STATE_LABELS.get(status.state, status.state)
    columns = st.columns(4)
    columns[0].metric("Status", label)
    columns[1].metric("Instances", f"{status.instance_count or 0} × {status.instance_type or '—'}")
    columns[2].metric("Since (UTC)", f"{status.since:%Y-%m-%d %H:%M}" if status.since else "—")
    columns[3].metric("Last invocation (UTC)", f"{status.last_invocation:%Y-%m-%d %H:%M}" if status.last_invocation else "none")
    st.caption(say("{name} · {mode} · {detail}", name=status.name, mode=status.mode, detail=status.detail))
    pending = st.session_state.get("pending_action")
    if pending is None:
        start, stop = st.columns(2)
        if start.button("Start endpoint…", disabled=status.state in ("in_service", "creating", "not_deployed")):
            st.session_state["pending_action"] = "start"
            st.rerun()
        if stop.button("Stop endpoint…", disabled=status.state in ("stopped", "not_deployed")):
            st.session_state["pending_action"] = "stop"
            st.rerun()
    else:
        hourly = prices.usd(f"sagemaker_hosting_hour:{status.instance_type or settings.sagemaker_instance_type}")
        st.warning(f"Start billing about ${hourly:.2f}/hour; ready in about {settings.endpoint_warmup_minutes:g} minutes?"
                   if pending == "start" else "Stop the endpoint? Captioning through it stops until someone starts it again.")
        confirm, cancel = st.columns(2)
        if confirm.button(f"Yes, {pending}", type="primary"):
            st.session_state.pop("pending_action")
            act(pending)
        if cancel.button("Cancel"):
            st.session_state.pop("pending_action")
            st.rerun()
    st.caption(f"Auto-stop: after {settings.autostop_idle_minutes:g} idle minutes (AUTOSTOP_IDLE_MINUTES), checked by the scheduled "
               "`python -m pipeline endpoint autostop` task.")
    if st.button("Run the auto-stop check now"):
        result = get_endpoint_controller().autostop(settings.autostop_idle_minutes, Actor(f"{user.email} (auto-stop check)", True))
        (st.success if result.changed else st.info)(say("Auto-stop: {result}. {message}", result=result.result, message=result.message))
    return status.state == "in_service" or status.billing


def render_audit_log() -> None:
    entries = store.audit_log(limit=50)
    with st.expander(f"Audit log ({len(entries)} latest)"):
        st.dataframe([{"When (UTC)": e.at, "Who": e.who, "Action": e.action, "Result": e.result, "Detail": e.detail} for e in entries],
                     hide_index=True, width="stretch")


def render_month_to_date(running_now: bool, local: bool) -> int:
    """Measured parts (endpoint uptime from the audit log, batch jobs and tokens from the usage ledger, at list
    prices) apart from the assumed fixed infrastructure, which is an estimate and never shown as spend."""
    st.subheader("This month")
    ledger = month_to_date(store, prices, assumptions, running_now=running_now)
    measured, per_image, images, hours, tokens = st.columns(5)
    measured.metric("Measured this month", f"${ledger.measured_usd:,.2f}",
                    help="Endpoint uptime from the audit log, batch jobs, summary and vision-caption tokens from the usage ledger, at list prices.")
    per_image.metric("Measured cost per image", f"${ledger.usd_per_image:,.4f}" if ledger.usd_per_image is not None else "—")
    images.metric("Images captioned", f"{ledger.images:,}")
    hours.metric("Endpoint hours (audit log)", f"{ledger.endpoint_hours:,.1f}")
    tokens.metric("Summary tokens", f"{ledger.tokens:,}")
    where = ("what the AWS deployment would cost; nothing of it is billed for this local run" if local
             else "the deployment's shape from infra/cdk.json, pro-rated to today; AWS Billing has the real figures")
    st.caption(f"Estimated fixed infrastructure (assumed, not billed data): ${ledger.estimated_usd:,.2f} so far this month: "
               f"dashboard tasks, load balancer, addresses, logs, alarms and secrets; {where}.")

    def label(component: str) -> str:
        return f"{component} (estimated)" if component in ledger.estimated else f"{component} (measured)"

    rows = [{"day": day, "component": label(component), "usd": usd}
            for day, components in ledger.daily.items() for component, usd in components.items()]
    if rows:
        frame = pd.DataFrame(rows)
        by_component = frame.groupby("component", as_index=False)["usd"].sum().assign(month="month to date")
        st.plotly_chart(px.bar(by_component, x="month", y="usd", color="component", title="Cost by component: measured and estimated"),
                        key="by-component")
        st.plotly_chart(px.bar(frame, x="day", y="usd", color="component", title="Daily cost: measured and estimated"), key="daily")
    return ledger.images


def render_estimator(images_this_month: int) -> None:
    st.subheader("What if…")
    left, right = st.columns(2)
    images = left.number_input("Images per month", min_value=1, value=max(images_this_month, 1000), step=100)
    days = left.number_input("Working days", 1, 31, assumptions.working_days)
    hours = left.number_input("Hours per working day", 1.0, 24.0, assumptions.hours_per_day)
    batches = right.number_input("Upload bursts per month", 1, 1000, assumptions.batches_per_month)
    model = right.selectbox("Summary model", ["gpt-4o", "gpt-4o-mini"])
    mode = right.selectbox("Summaries", SUMMARY_MODES, format_func=SUMMARY_MODE_LABELS.get,
                           help="The OpenAI Batch API costs half the token price and answers within 24 hours (usually far sooner).")
    seo = right.selectbox("SEO fields written by", SEO_FIELDS_BY, index=SEO_FIELDS_BY.index(settings.seo_fields_by),
                          help="template (SEO_FIELDS_BY default): filled after the answer, no tokens; model: GPT-4o writes them, "
                               "about 199 more input and 102 more output tokens per photo.")
    latency = right.number_input("First result needed within (seconds)", 1, 86_400, 60)
    names = list(PROFILES)
    profile = left.selectbox("Deployment profile", names, index=names.index(settings.deployment_profile),
                             help="The always-on part: dashboard hours, task size, load balancer, addresses (docs/deploy.md).")
    st.caption(say("{what}. Gives up: {gives_up}.", what=PROFILES[profile].what, gives_up=PROFILES[profile].gives_up))
    chosen = replace(assumptions, images_per_month=int(images), working_days=int(days), hours_per_day=float(hours),
                     batches_per_month=int(batches), summary_model=model, summary_mode=mode, seo_fields_by=seo)
    estimate = estimate_monthly_cost(chosen, prices, profile)
    best = estimate.cheapest_meeting(latency)
    if best:
        st.success(f"Cheapest within {latency:,} s: **{best.name}**, ${best.monthly_usd:,.2f}/month.")
    else:
        st.warning(f"No scenario answers within {latency:,} s.")
    rows = [{"scenario": s.name, "component": c, "usd": usd} for s in estimate.scenarios for c, usd in s.breakdown.items()]
    st.plotly_chart(px.bar(pd.DataFrame(rows), x="scenario", y="usd", color="component", title="Monthly cost by scenario"), key="scenarios")
    st.dataframe([{"Scenario": s.name, "USD / month": s.monthly_usd, "First result": s.latency, "How": s.notes} for s in estimate.scenarios],
                 hide_index=True, width="stretch")
    render_volume_chart(chosen, profile)
    with st.expander("Prices used (source and date)"):
        st.dataframe([{"Price": k, "USD": p.usd, "Unit": p.unit, "Source": p.source, "As of": p.as_of} for k, p in prices.prices.items() if k not in REFERENCE_PRICES],
                     hide_index=True, width="stretch")


SUMMARY_MODE_LABELS = {"auto": "Batch API for batch transform only", "realtime": "one by one (real time)",
                       "batch": "Batch API everywhere (within 24 h)"}
VOLUMES = (100, 200_000)


def render_volume_chart(chosen: Assumptions, profile: str) -> None:
    """Cost against photos a month for each scenario (every part is linear in the volume), the points where the
    cheapest one changes marked."""
    lines = {name: line for name, line in cost_lines(chosen, prices, profile).items() if not name.endswith(QUOTED_SUFFIX)}
    points = break_even_points(chosen, prices, *VOLUMES, profile)
    volumes = sorted({round(VOLUMES[0] * (VOLUMES[1] / VOLUMES[0]) ** (i / 40)) for i in range(41)} | {p.images_per_month for p in points})
    frame = pd.DataFrame([{"photos per month": v, "scenario": name, "USD / month": round(fixed + per_photo * v, 2)}
                          for name, (fixed, per_photo) in lines.items() for v in volumes])
    figure = px.line(frame, x="photos per month", y="USD / month", color="scenario", log_x=True, log_y=True,
                     title=f"Monthly cost by photos a month ({profile}): break-even points marked")
    for point in points:
        figure.add_scatter(x=[point.images_per_month], y=[point.monthly_usd], mode="markers+text", marker={"size": 11, "symbol": "x"},
                           text=[f"break-even {point.images_per_month:,.0f}"], textposition="top center",
                           name=f"{point.cheaper_before} → {point.cheaper_after}", showlegend=False)
    st.plotly_chart(figure, key="by-volume")
    if points:
        st.dataframe([{"Photos / month": f"{p.images_per_month:,.0f}", "USD / month": p.monthly_usd, "Cheaper below": p.cheaper_before,
                       "Cheaper above": p.cheaper_after} for p in points], hide_index=True, width="stretch")
    else:
        st.caption(f"No break-even between {VOLUMES[0]:,} and {VOLUMES[1]:,} photos a month: one scenario is cheapest throughout.")


st.title("Admin")
running = render_endpoint_card()
render_audit_log()
st.divider()
render_estimator(render_month_to_date(running, local=setup_problem() is not None))
