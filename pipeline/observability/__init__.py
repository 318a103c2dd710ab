"""Logs and metrics for operators (docs/operations.md "Logs and metrics").

Entry points (the CLI's `main`, the dashboard's runtime) call `configure(settings)` once; the
library only logs through `logging.getLogger(...)` and records metrics through
`pipeline.observability.metrics` / `ItemTrace`, which go nowhere until an entry point configures them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from pipeline.observability.logs import configure_logging
from pipeline.observability.metrics import MetricsRegistry, configure_metrics, registry
from pipeline.observability.trace import ItemTrace, NoTrace, error_kind

if TYPE_CHECKING:
    from pipeline.settings import Settings

__all__ = ["ItemTrace", "MetricsRegistry", "NoTrace", "configure", "error_kind", "registry"]


def configure(settings: "Settings", *, stream: TextIO | None = None) -> MetricsRegistry:
    """Logs at LOG_LEVEL as LOG_FORMAT on stderr (or `stream`), metrics into a fresh in-process registry
    (returned) and, with METRICS_FORMAT=emf, as EMF lines on the same stream. Secrets from the settings
    and the environment are removed from every line."""
    secrets = [settings.openai_api_key.get_secret_value()] if settings.openai_api_key else []
    configure_logging(settings.log_level, settings.log_format, stream=stream, secrets=secrets)
    return configure_metrics(settings.metrics_format, settings.metrics_namespace, stream=stream)
