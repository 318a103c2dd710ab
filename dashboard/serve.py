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
import os
import re
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
    from pipeline.settings import Settings, settings_problem

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # one sentence, as the CLI says it; no traceback
        print(startup_error(settings_problem(exc)), file=sys.stderr)
        return 2
    configure_observability(settings)  # get_runtime configures again on the first page view: same settings
    options: list[str] = []
    if settings.log_format == "json":
        secrets = [settings.openai_api_key.get_secret_value()] if settings.openai_api_key else []
        json_lines_only(secrets)
        options = list(JSON_OPTIONS)
    log.info("dashboard server starting", extra={"app": str(APP), "streamlit_options": redacted_options([*options, *argv])})

    from streamlit.web import cli as streamlit_cli

    try:
        streamlit_cli.main.main(args=["run", str(APP), *options, *argv], prog_name="streamlit")
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    return 0


def startup_error(sentence: str) -> str:
    """The line for a problem found before logging is set up: `error: <sentence>`, or, when LOG_FORMAT=json is in the
    environment (the container), one JSON object (level ERROR, the sentence as its message) like every other line."""
    if os.environ.get("LOG_FORMAT", "").strip().lower() != "json":
        return f"error: {sentence}"
    from pipeline.observability.logs import JsonFormatter, Redactor, secret_values_from_environment

    record = logging.makeLogRecord({"name": log.name, "levelname": "ERROR", "levelno": logging.ERROR, "msg": sentence})
    return JsonFormatter(Redactor(secret_values_from_environment())).format(record)


_SECRET_OPTION = re.compile(r"(?i)(secret|password|passwd|token|key|credential|cookie|auth)")


def redacted_options(argv: list[str]) -> list[str]:
    """Command-line options as logged: the value of an option whose name looks secret (`--server.cookieSecret`,
    `--x.apiKey`, …) is replaced, in both the `--name=value` and the `--name value` (two items) forms."""
    from pipeline.observability.logs import REDACTED

    shown: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        if arg.startswith("-"):
            name, equals, _ = arg.partition("=")
            if _SECRET_OPTION.search(name):
                if equals:
                    arg = f"{name}={REDACTED}"
                else:
                    hide_next = True
        shown.append(arg)
    return shown


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
