"""Structured logs: one event per item stage, as JSON lines (or readable text) on stderr.

Only stdlib `logging`. `configure_logging` is called once by an entry point (the CLI's `main`,
the dashboard's runtime); library code only calls `logging.getLogger(...)`. Redaction is the
formatters' job, not the callers': every message, field and traceback passes `redact` on its way
out, so an API key, a token, a presigned URL's query string or photo bytes never reach a log line
even when a caller (or a library's own log) puts them there.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, TextIO
from urllib.parse import quote

ITEM_LOGGER = "pipeline.items"  # one event per item stage (docs/operations.md "Logs and metrics")
OUR_LOGGERS = ("pipeline", "dashboard")  # at LOG_LEVEL; everything else (boto, httpx, …) at WARNING and above
EVENT_FIELDS = ("batch_id", "item_id", "stage", "duration_ms", "outcome", "error_kind")
MAX_TEXT = 2000  # longer strings are cut: a log line never carries a blob
# Log lines and EMF lines share stderr from many threads: one lock for both, so no line is split by another.
OUTPUT_LOCK = threading.RLock()
REDACTED = "[redacted]"

# LogRecord's own attributes: anything else on a record is a field a caller passed in `extra`.
_RECORD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_NAME = re.compile(r"(?i)(api[_-]?key|apikey|secret|token|password|passwd|authorization|credential|signature|cookie)")
_PATTERNS: list[tuple[re.Pattern[str], Any]] = [
    # photo bytes: data: URLs, Python bytes reprs, long base64 runs
    (re.compile(r"data:[\w/+.-]*;base64,[A-Za-z0-9+/=\s]*"), "data:[base64 removed]"),
    (re.compile(r"""(?<![A-Za-z0-9_])b(['"])(?:\\x[0-9a-fA-F]{2}|\\.|(?!\1).){32,}?\1"""), "[bytes removed]"),
    (re.compile(r"[A-Za-z0-9+/]{120,}={0,2}"), lambda m: f"[{len(m.group())} base64 characters removed]"),
    # a URL's query string and fragment (presigned URLs carry their signature and token there); user:password@
    (re.compile(r"(?i)\b((?:https?|s3|wss?)://)[^/\s@'\"<>]+@"), r"\1[credentials removed]@"),
    (re.compile(r"""(?i)\b((?:https?|s3|wss?)://[^\s?#'"<>]*)[?#][^\s'"<>]*"""), r"\1?[query removed]"),
    (re.compile(r"""(?<=[\s"'(])(/[^\s?#"'<>]*)\?[^\s"'<>]+"""), r"\1?[query removed]"),  # a request line's path?query
    # keys and tokens by their shape
    (re.compile(r"(?:\b|(?<=%[0-9A-Fa-f]{2}))sk(?:-|%2[dD])[A-Za-z0-9_\-%]{8,}"), "sk-" + REDACTED),  # also URL-encoded: …%3Dsk%2D…
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "[aws key id removed]"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]+"), "Bearer " + REDACTED),
    # Basic user:password in base64 (a header value without its name too: httpx logs headers as pairs)
    (re.compile(r"(?i)\bbasic\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2}"), "Basic " + REDACTED),
    # an Authorization value of any scheme (Basic, Digest, Negotiate, AWS4-HMAC-SHA256 …): the scheme word stays
    (re.compile(r"""(?i)(authorization["']?\s*[:=]\s*["']?[A-Za-z][\w-]*\s+)[^\s"'&,;}]+"""), r"\1" + REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), "[jwt removed]"),
    # name=value / "name": "value" pairs whose name says secret
    (re.compile(r"""(?i)((?:x-amz-)?(?:api[_-]?key|apikey|secret(?:[_-]?access[_-]?key)?|security[_-]?token|session[_-]?token|"""
                r"""token|password|passwd|signature|credential|authorization)["']?\s*[:=]\s*["']?)([^\s"'&,;}]+)"""),
     r"\1" + REDACTED),
]


def secret_values_from_environment(environ: dict[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say secret (OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY,
    AWS_SESSION_TOKEN, …): removed from every line wherever they appear, whatever their shape."""
    environ = os.environ if environ is None else environ
    return [value for name, value in environ.items() if _SECRET_NAME.search(name) and len(value) >= 8]


class Redactor:
    """Removes secrets, URL query strings and photo bytes from text and from field values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        known = {s for s in secrets if s and len(s) >= 8}
        encoded = {quote(s, safe="") for s in known} | {quote(s, safe="").replace("-", "%2D") for s in known}
        self.secrets = sorted(known | encoded, key=len, reverse=True)  # as given and URL-encoded (a query, a form body)

    def text(self, value: str, limit: int = MAX_TEXT) -> str:
        """Redacted, then cut to its first `limit` characters."""
        value = self._redacted(value)
        if len(value) > limit:
            value = value[:limit] + f"… [{len(value) - limit} characters cut]"
        return value

    def tail(self, value: str, limit: int = MAX_TEXT) -> str:
        """Redacted, then cut to its last `limit` characters from a line start: a traceback's end is the most recent
        call and the exception itself (its start is the framework's own frames). Redacted before the cut, so no cut
        leaves half a secret unmatched."""
        value = self._redacted(value)
        if len(value) <= limit:
            return value
        kept = value[-limit:]
        if "\n" in kept:
            kept = kept[kept.index("\n") + 1:]
        first = value.splitlines()[0] if value else ""
        return f"{first[:200]}\n  … [{len(value) - len(kept)} characters cut]\n{kept}"

    def _redacted(self, value: str) -> str:
        for secret in self.secrets:
            value = value.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def json_value(self, value: Any, name: str = "") -> Any:
        """A parsed JSON document redacted in place of a printed line: every string (keys' values at any depth) as
        `text`, a string under a secret-looking name removed; numbers, booleans and the shape are kept, so an EMF
        document (metric values under names like OpenAiInputTokens) stays valid EMF."""
        if isinstance(value, str):
            return REDACTED if name and _SECRET_NAME.search(name) else self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.json_value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_value(v) for v in value]
        return value

    def value(self, value: Any, name: str = "") -> Any:
        """A JSON-safe, redacted copy of a field value."""
        if name and _SECRET_NAME.search(name) and value is not None:
            return REDACTED
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"[{len(value)} bytes removed]"
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {str(k): self.value(v, str(k)) for k, v in list(value.items())[:50]}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v) for v in list(value)[:50]]
        return self.text(repr(value) if not hasattr(value, "get_secret_value") else REDACTED)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a caller attached with `extra=`."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then the event's fields; all redacted."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": r.text(_message(record)),
        }
        for name, value in record_fields(record).items():
            line[name if name not in line else f"field_{name}"] = r.value(value, name)
        if record.exc_info:
            fields = exception_fields(r, record.exc_info, self.formatException(record.exc_info))
            line["exception"] = fields.pop("exception")
            for name, value in fields.items():  # an error_type / error the caller passed in `extra` stays
                line.setdefault(name, value)
        return json.dumps(line, ensure_ascii=False, default=str)


MAX_ERROR = 500  # `error`: the exception's own message, bounded


def _error_of(exc_info: Any) -> BaseException | None:
    error = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None
    return error if isinstance(error, BaseException) else None


def exception_fields(r: Redactor, exc_info: Any, formatted: str) -> dict[str, Any]:
    """`error_type` (the exception's class), `error` (its message, redacted, at most MAX_ERROR characters) and
    `exception` (the traceback's tail: the most recent call and the exception line)."""
    fields: dict[str, Any] = {}
    error = _error_of(exc_info)
    if error is not None:
        kind = type(error)
        fields["error_type"] = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
        fields["error"] = r.text(str(error), MAX_ERROR)
    fields["exception"] = bounded_traceback(r, error, formatted)
    return fields


def bounded_traceback(r: Redactor, error: BaseException | None, formatted: str) -> str:
    """The traceback redacted and at most about MAX_TEXT characters: its tail (the most recent calls), then the
    exception line(s) cut to MAX_ERROR, so a long message cannot push the most recent call out."""
    only = "".join(traceback.format_exception_only(type(error), error)).rstrip("\n") if error is not None else ""
    if only and formatted.endswith(only):
        frames = formatted[:-len(only)].rstrip("\n")
        return r.tail(frames, MAX_TEXT - MAX_ERROR) + "\n" + r.text(only, MAX_ERROR)
    return r.tail(formatted)


class TextFormatter(logging.Formatter):
    """For a person at a terminal: `time LEVEL logger: message key=value …`, redacted the same way."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        r = self.redactor
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%H:%M:%S")
        fields = " ".join(f"{k}={json.dumps(r.value(v, k), default=str) if not isinstance(v, (int, float)) else v}"
                          for k, v in record_fields(record).items() if v is not None)
        text = f"{when} {record.levelname} {record.name}: {_one_line(r.text(_message(record)))}" + (f" {fields}" if fields else "")
        if record.exc_info:  # indented, so no line of it (an exception's own message included) looks like an entry
            text += "\n" + "\n".join("    " + line for line in bounded_traceback(r, _error_of(record.exc_info), self.formatException(record.exc_info)).splitlines())
        return text


def _one_line(text: str) -> str:
    """A newline in a message would start a line that looks like its own entry (and a carriage return would
    overwrite the line on a terminal): written as the two characters \\n and \\r."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # a bad format string in someone's log call: keep the template
        return str(record.msg)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a test's capture, a redirected stream)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return output_stream(sys.stderr)

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(level: str = "WARNING", fmt: str = "text", *, stream: TextIO | None = None,
                      secrets: Iterable[str] = ()) -> logging.Handler:
    """Send log records to `stream` (stderr) as JSON lines (`fmt="json"`) or text. Our loggers log at
    `level`; other libraries' at WARNING and above. Calling it again replaces what it set before."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_tagger", False):
            root.removeHandler(handler)
            handler.close()
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.lock = OUTPUT_LOCK  # type: ignore[assignment]  # emit runs under it (logging.Handler.handle)
    handler._tagger = True  # type: ignore[attr-defined]
    redactor = Redactor([*secrets, *secret_values_from_environment()])
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())
    return handler


def adopt_library_logger(logger: logging.Logger) -> None:
    """A library logger that writes to the console through its own handler (Streamlit gives each of its loggers one,
    and no propagation) writes through ours instead: its handlers go, its records reach the root handler (format,
    redaction, the output lock), and like other libraries it logs WARNING and above."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)


def output_stream(stream: TextIO) -> TextIO:
    """Where our own log and EMF lines go: past a `JsonLineStream` to the stream it writes to, so that the objects it
    does make (text and JSON someone printed) carry `printed_to` and ours never do. Both write whole lines under
    OUTPUT_LOCK, so neither splits the other's line."""
    return stream.target if isinstance(stream, JsonLineStream) else stream


class JsonLineStream(io.TextIOBase):
    """Stands in for sys.stdout / sys.stderr in a process whose every output line must be one JSON object (the
    dashboard server with LOG_FORMAT=json, whose output CloudWatch Logs Insights queries by field). A line that already
    is a JSON object (an EMF document, JSON a library prints) stays that object, with every string in it redacted (printed
    JSON is printed text: a key or a presigned URL in it goes) and `printed_to` added; any other non-blank line — text a
    library prints instead of logging it (Streamlit's start-up and "Stopping..." lines, a raw traceback) — becomes an
    object of its own (`logger` "stdout" or "stderr", `level` INFO or WARNING), redacted like every log line; blank
    lines are dropped. Text is held until its newline, so a line printed in pieces (click's `nl=False`) is one object;
    a line that never ends is cut at MAX_PENDING characters. It has no binary `buffer`, so writers that look for one
    (click) write text here. Writes straight to the file descriptor (C code, child processes) are not seen."""

    MAX_PENDING = 64 * 1024

    def __init__(self, target: TextIO, name: str, level: str, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.target, self.stream_name, self.level = target, name, level
        self.formatter = JsonFormatter(redactor)
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.target.fileno()

    def write(self, text: str) -> int:  # type: ignore[override]
        with OUTPUT_LOCK:
            pending = self._pending + text
            *lines, pending = pending.split("\n")
            while len(pending) > self.MAX_PENDING:
                lines.append(pending[:self.MAX_PENDING])
                pending = pending[self.MAX_PENDING:]
            self._pending = pending
            out = [converted for converted in map(self._convert, lines) if converted is not None]
            if out:
                self.target.write("".join(line + "\n" for line in out))
        return len(text)

    def flush(self) -> None:  # a partial line stays pending: click flushes after `nl=False`
        with OUTPUT_LOCK:
            self.target.flush()

    def close(self) -> None:
        """Writes a last unterminated line; the target stream stays open."""
        with OUTPUT_LOCK:
            if self._pending:
                converted = self._convert(self._pending)
                self._pending = ""
                if converted is not None:
                    self.target.write(converted + "\n")
            self.target.flush()
        super().close()

    def _convert(self, line: str) -> str | None:
        line = line.rstrip("\r")
        text = line.strip()
        if not text:
            return None
        if text.startswith("{") and text.endswith("}"):
            try:
                document = json.loads(text)
            except ValueError:
                document = None
            if isinstance(document, dict):  # redacted like any line: printed JSON is text someone printed
                document = self.formatter.redactor.json_value(document)
                document["printed_to"] = self.stream_name  # not one of our events, whatever it claims to be
                return json.dumps(document, ensure_ascii=False)
        record = logging.makeLogRecord({"name": self.stream_name, "levelname": self.level, "printed_to": self.stream_name,
                                        "levelno": logging.getLevelName(self.level), "msg": _ANSI.sub("", text)})
        return self.formatter.format(record)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves a library meant for a terminal
