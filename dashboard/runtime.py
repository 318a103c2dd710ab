"""What every page needs: the process-wide runtime (settings, pipeline stages, background worker)
and the signed-in user. Pages call these and the `pipeline` library; nothing else lives here."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dashboard.navigation import restart_through_app_if_opened_directly
from dashboard.text import inert
from pipeline.admin.identity import AlbKeyCache, AuthError, User, identify
from pipeline.observability import configure as configure_observability
from pipeline.batches.runner import Stages
from pipeline.captioners import photo_by_photo_problem
from pipeline.service import build_stages, build_transform_runner
from pipeline.settings import Settings
from pipeline.batches.worker import BatchWorker


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    stages: Stages
    worker: BatchWorker
    keys: AlbKeyCache


@st.cache_resource(show_spinner=False)
def get_runtime() -> Runtime:
    """One per server process (st.cache_resource), shared by every session: the worker thread and
    the loaded model outlive any one browser tab. Unfinished batches resume on the first page view."""
    settings = Settings()
    configure_observability(settings)  # logs and metrics of this server process, once (LOG_*, METRICS_*)
    if settings.log_format == "json":
        route_streamlit_logs()
    stages = build_stages(settings)
    worker = BatchWorker(stages, concurrency=settings.concurrency, transform=build_transform_runner(settings, stages),
                         no_photo_by_photo=photo_by_photo_problem(settings))  # ENDPOINT_ENABLED=false: jobs only
    worker.resume_unfinished()
    return Runtime(settings, stages, worker, AlbKeyCache(settings.alb_key_url, settings.aws_region))


def route_streamlit_logs() -> None:
    """LOG_FORMAT=json: Streamlit's own lines go through our handler too, so every stderr line is one redacted JSON
    object. Streamlit gives each of its loggers a console handler of its own (streamlit/logger.py, also for loggers it
    creates later) and prints an uncaught page exception with Rich (colours, boxes; streamlit/error_util.py) unless
    `logger.enableRich` is off, when it logs it as `streamlit.error_util` ERROR with the traceback."""
    import logging

    from streamlit import logger as streamlit_logger

    from pipeline.observability.logs import adopt_library_logger

    st.set_option("logger.enableRich", False)
    streamlit_logger.setup_formatter = adopt_library_logger  # called for every logger Streamlit makes from now on
    for logger in [*streamlit_logger._loggers.values(), logging.getLogger("streamlit")]:
        adopt_library_logger(logger)
    logging.captureWarnings(True)  # warnings.warn() of any library: a py.warnings record, not a raw stderr line


def current_user(runtime: Runtime) -> User:
    """Checked on every script run; an unverifiable sign-in stops the page with a plain message.

    Every page calls this before drawing anything, so it is also the one place where a page opened
    directly (a typed /review on a fresh server, which Streamlit runs as a file of the pages/ folder,
    with the folder's raw list as the sidebar) starts again through app.py's menu."""
    restart_through_app_if_opened_directly()
    try:
        return identify(dict(st.context.headers), runtime.settings, runtime.keys)
    except AuthError as error:
        st.error(inert(error))  # may echo a header value
        st.stop()
        raise  # unreachable: st.stop() ends the run


def require_admin(user: User) -> None:
    """Admin pages and admin actions call this themselves, not just the navigation."""
    if not user.is_admin:
        st.error("This page is for admins. Ask an admin if you need access.")
        st.stop()


@st.cache_resource(show_spinner=False)
def get_endpoint_controller():
    """Boto3 clients for the endpoint switch, made once per server (AWS credentials come from the task role)."""
    from pipeline.admin.endpoint import EndpointController

    runtime = get_runtime()
    return EndpointController.from_settings(runtime.settings, runtime.stages.store)
