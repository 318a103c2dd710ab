"""Metrics: per-stage latency histograms and counters, kept in-process for the dashboard and written
as CloudWatch Embedded Metric Format (EMF) lines for CloudWatch in the container.

Like logs, metrics travel through stdlib `logging` (logger `pipeline.metrics`, never propagated to
the log output): `observe`/`count` make one record each; the entry point's `configure_metrics`
attaches a `MetricsRegistry` (in-process aggregates, what `registry()` returns) and, with
METRICS_FORMAT=emf, an `EmfHandler` (one EMF JSON line per observation on stderr, which the
container's awslogs driver ships to CloudWatch Logs; CloudWatch extracts the metrics from it).
Nothing configured (a library user, most tests): the records go nowhere.

EMF document (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
{"_aws": {"Timestamp": <ms>, "CloudWatchMetrics": [{"Namespace": ns, "Dimensions": [[...]], "Metrics": [{"Name", "Unit"}]}]},
 <dimension>: "<value>", <metric name>: <number>, <other properties>…}
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any, TextIO

from pipeline.observability.logs import OUTPUT_LOCK, Redactor, output_stream

METRICS_LOGGER = "pipeline.metrics"
DEFAULT_NAMESPACE = "ProductTagger"

# Metric names (CloudWatch names; the CDK alarms and dashboard in infra/tagger_infra/monitoring.py use these)
STAGE_LATENCY = "StageLatency"  # ms, dimension Stage: fetch | normalize | checks | caption | summarize | save
ITEM_LATENCY = "ItemLatency"  # ms, one item over all its stages
ITEMS_OK = "ItemsOk"
ITEMS_FAILED = "ItemsFailed"  # dimension sets [] and [ErrorKind]
ENDPOINT_INVOCATIONS = "EndpointInvocations"  # SageMaker invocations (real-time, async, batch transform photos)
OPENAI_INPUT_TOKENS = "OpenAiInputTokens"
OPENAI_OUTPUT_TOKENS = "OpenAiOutputTokens"
CAPTION_CACHE_HITS = "CaptionCacheHits"
CAPTION_CACHE_MISSES = "CaptionCacheMisses"

_logger = logging.getLogger(METRICS_LOGGER)
_logger.propagate = False  # metric records are never log lines
_logger.setLevel(logging.INFO)  # independent of LOG_LEVEL
_logger.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Observation:
    name: str
    value: float
    unit: str  # a CloudWatch unit: Milliseconds, Count, …
    kind: str  # "histogram" (a distribution: percentiles) or "counter" (a sum)
    dimensions: dict[str, str] = field(default_factory=dict)
    dimension_sets: tuple[tuple[str, ...], ...] = ((),)
    properties: dict[str, Any] = field(default_factory=dict)  # searchable in the log line, not dimensions


def _record(obs: Observation) -> None:
    if _logger.isEnabledFor(logging.INFO):
        _logger.info(obs.name, extra={"metric": obs})


def observe(name: str, value: float, *, unit: str = "Milliseconds", dimensions: dict[str, str] | None = None,
            properties: dict[str, Any] | None = None) -> None:
    """One sample of a distribution (a latency): p50/p95 in the registry and in CloudWatch."""
    dims = dict(dimensions or {})
    _record(Observation(name, float(value), unit, "histogram", dims, (tuple(dims),), dict(properties or {})))


def count(name: str, value: float = 1, *, dimensions: dict[str, str] | None = None,
          dimension_sets: tuple[tuple[str, ...], ...] | None = None, properties: dict[str, Any] | None = None) -> None:
    """Add `value` to a counter. `dimension_sets` publishes it under several (e.g. ((), ("ErrorKind",)):
    a total and one per kind)."""
    dims = dict(dimensions or {})
    _record(Observation(name, float(value), "Count", "counter", dims, dimension_sets or (tuple(dims),), dict(properties or {})))


# Bucket upper bounds in ms: 1 ms .. 15 min, then everything longer.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000, 120_000, 300_000, 900_000, math.inf)


class Histogram:
    """Counts per bucket since the process started, and the most recent samples for percentiles."""

    def __init__(self, recent: int = 4096) -> None:
        self.count, self.total = 0, 0.0
        self.buckets = [0] * len(BUCKETS_MS)
        self.recent: deque[float] = deque(maxlen=recent)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.buckets[bisect.bisect_left(BUCKETS_MS, value)] += 1
        self.recent.append(value)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank percentile of the recent samples (q in 0..1); None without samples."""
        if not self.recent:
            return None
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.total, "p50": self.quantile(0.5), "p95": self.quantile(0.95),
                "max": max(self.recent) if self.recent else None,
                "buckets": {("+inf" if math.isinf(b) else b): n for b, n in zip(BUCKETS_MS, self.buckets) if n}}


def _key(name: str, dimensions: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(dimensions.items()))


class MetricsRegistry(logging.Handler):
    """In-process aggregates of every observation this process made (what a dashboard page reads).
    Per process: across several tasks, the store's per-item `stage_ms` / `error_kind` and CloudWatch
    are the whole picture."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._counters: dict[tuple, float] = {}
        self._histograms: dict[tuple, Histogram] = {}

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        obs = getattr(record, "metric", None)
        if not isinstance(obs, Observation):
            return
        key = _key(obs.name, obs.dimensions)
        if obs.kind == "counter":
            self._counters[key] = self._counters.get(key, 0.0) + obs.value
        else:
            self._histograms.setdefault(key, Histogram()).add(obs.value)

    def counter(self, name: str, **dimensions: str) -> float:
        """Sum of `name` over every series whose dimensions include `dimensions`."""
        want = set(dimensions.items())
        with self.lock:
            return sum(v for (n, dims), v in self._counters.items() if n == name and want <= set(dims))

    def histogram(self, name: str, **dimensions: str) -> Histogram | None:
        with self.lock:
            return self._histograms.get(_key(name, dimensions))

    def snapshot(self) -> dict[str, Any]:
        """{"counters": [{name, dimensions, value}], "histograms": [{name, dimensions, count, sum, p50, p95, max, buckets}]}"""
        with self.lock:
            return {
                "counters": [{"name": n, "dimensions": dict(d), "value": v} for (n, d), v in sorted(self._counters.items())],
                "histograms": [{"name": n, "dimensions": dict(d), **h.summary()} for (n, d), h in sorted(self._histograms.items())],
            }


def emf_document(obs: Observation, *, namespace: str, timestamp_ms: int, redactor: Redactor | None = None) -> dict[str, Any]:
    """One EMF document for one observation: the metric's value and its dimensions as top-level members."""
    redactor = redactor or Redactor()
    doc: dict[str, Any] = {
        "_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": [{
            "Namespace": namespace, "Dimensions": [list(s) for s in obs.dimension_sets],
            "Metrics": [{"Name": obs.name, "Unit": obs.unit}]}]},
    }
    for name, value in obs.properties.items():
        doc[name] = redactor.value(value, name)
    for name, value in obs.dimensions.items():
        doc[name] = str(value)
    doc[obs.name] = obs.value
    return doc


class EmfHandler(logging.Handler):
    """Writes each observation as one EMF JSON line (stderr by default: the CLI's stdout stays clean)."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, stream: TextIO | None = None, redactor: Redactor | None = None) -> None:
        super().__init__(logging.INFO)
        self.lock = OUTPUT_LOCK  # type: ignore[assignment]  # the log handler's too: whole lines on a shared stream
        self.namespace, self.stream, self.redactor = namespace, stream, redactor or Redactor()

    def emit(self, record: logging.LogRecord) -> None:
        obs = getattr(record, "metric", None)
        if not isinstance(obs, Observation):
            return
        try:
            line = json.dumps(emf_document(obs, namespace=self.namespace, timestamp_ms=int(record.created * 1000),
                                           redactor=self.redactor), separators=(",", ":"))
            stream = self.stream if self.stream is not None else output_stream(sys.stderr)
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_metrics(fmt: str = "off", namespace: str = DEFAULT_NAMESPACE, *, stream: TextIO | None = None) -> MetricsRegistry:
    """Attach a fresh in-process registry (returned) and, for fmt="emf", the EMF writer; replaces what
    an earlier call attached."""
    for handler in list(_logger.handlers):
        if getattr(handler, "_tagger", False):
            _logger.removeHandler(handler)
            handler.close()
    registry_ = MetricsRegistry()
    handlers: list[logging.Handler] = [registry_]
    if fmt == "emf":
        handlers.append(EmfHandler(namespace, stream))
    for handler in handlers:
        handler._tagger = True  # type: ignore[attr-defined]
        _logger.addHandler(handler)
    return registry_


def registry() -> MetricsRegistry | None:
    """The registry `configure_metrics` attached (None when nothing was configured)."""
    return next((h for h in _logger.handlers if isinstance(h, MetricsRegistry)), None)
