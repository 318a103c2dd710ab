"""The dashboard server as the container image starts it: `python -m dashboard.serve [streamlit run options]`.

It runs `streamlit run dashboard/app.py` (app.py stays the router) through Streamlit's own command line, after one
thing `streamlit run` cannot do: with LOG_FORMAT=json (the image), every line the process writes is one JSON object,
from the first one on, for CloudWatch Logs Insights. Streamlit's loggers write through our JSON handler before the
server starts (Streamlit gives each of them a console handler of its own), its welcome text with the URLs is
switched off (`logger.hideWelcomeMessage`; our own `dashboard server starting` event says what is served), uncaught
page exceptions are logged rather than drawn with Rich (`logger.enableRich` off), and stdout / stderr are
`JsonLineStream`s, so text anyone prints instead of logging it ("Stopping..." on SIGTERM, a raw traceback) becomes a
redacted JSON object too. With LOG_FORMAT=text it is plain `streamlit run` with our text logs.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
from pathlib import Path
from types import TracebackType

APP = Path(__file__).with_name("app.py")
# Put before the caller's options, so a flag given on the command line still wins.
JSON_OPTIONS = ("--logger.hideWelcomeMessage=true", "--logger.enableRich=false", "--server.headless=true")

log = logging.getLogger("dashboard.serve")


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from pipeline.observability import configure as configure_observability
    from pipeline.settings import Settings

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # one sentence, as the CLI says it; no traceback
        first = exc.errors()[0]
        print(f"error: setting {'.'.join(str(p) for p in first['loc']).upper()}: {first['msg']}", file=sys.stderr)
        return 2
    configure_observability(settings)  # get_runtime configures again on the first page view: same settings
    options: list[str] = []
    if settings.log_format == "json":
        secrets = [settings.openai_api_key.get_secret_value()] if settings.openai_api_key else []
        json_lines_only(secrets)
        options = list(JSON_OPTIONS)
    log.info("dashboard server starting", extra={"app": str(APP), "streamlit_options": [*options, *argv]})

    from streamlit.web import cli as streamlit_cli

    try:
        streamlit_cli.main.main(args=["run", str(APP), *options, *argv], prog_name="streamlit")
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    return 0


def json_lines_only(secrets: list[str]) -> None:
    """Every line this process writes from now on is one redacted JSON object (see the module's docstring)."""
    from streamlit import logger as streamlit_logger

    from pipeline.observability.logs import JsonLineStream, Redactor, adopt_library_logger, secret_values_from_environment

    redactor = Redactor([*secrets, *secret_values_from_environment()])
    sys.stdout = JsonLineStream(sys.__stdout__, "stdout", "INFO", redactor)
    sys.stderr = JsonLineStream(sys.__stderr__, "stderr", "WARNING", redactor)
    for stream in (sys.stdout, sys.stderr):
        atexit.register(stream.close)  # a last line printed without its newline is still written
    # Streamlit calls setup_formatter for every logger it makes and again when its config is parsed.
    streamlit_logger.setup_formatter = adopt_library_logger
    for logger in [*streamlit_logger._loggers.values(), logging.getLogger("streamlit")]:
        adopt_library_logger(logger)
    _uvicorn_logs_through_ours()
    logging.captureWarnings(True)  # warnings.warn() of any library: a py.warnings record
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def _uvicorn_logs_through_ours() -> None:
    """Uvicorn (Streamlit's server) applies its default logging config, `uvicorn.config.LOGGING_CONFIG`, when Streamlit
    makes its `uvicorn.Config`: handlers of its own writing "INFO:     Waiting for application startup." to stderr.
    Changed in place (it is the default argument's object) so its loggers have no handler of their own and, like other
    libraries, reach ours at WARNING and above."""
    try:
        from uvicorn import config as uvicorn_config
    except ImportError:  # pragma: no cover - Streamlit's server depends on it
        return
    for entry in uvicorn_config.LOGGING_CONFIG.get("loggers", {}).values():
        entry.update(handlers=[], propagate=True, level="WARNING")


def _log_uncaught(kind: type[BaseException], error: BaseException | None, trace: TracebackType | None) -> None:
    """An exception nobody caught (the main thread, a thread): one ERROR object with the redacted traceback, not one
    object per traceback line."""
    if error is None or isinstance(error, KeyboardInterrupt):
        return
    log.error("uncaught exception: %s", kind.__name__, exc_info=(kind, error, trace))


if __name__ == "__main__":
    sys.exit(main())
