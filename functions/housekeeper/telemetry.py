"""Logging set-up: structured JSON on Cloud Functions, readable text elsewhere.

Configured once, at the entry point. Every handler carries a filter that adds
the current job and run id and removes any configured secret value from the
message, its arguments, its structured fields and its traceback; the handler
then redacts the finished line once more, because some of its fields (the
request URL of a structured entry) are only added while it formats.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from housekeeper.config import Settings

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 4

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "housekeeper_log_context", default=()
)
_secrets: frozenset[str] = frozenset()
_secret_pattern: re.Pattern[str] | None = None
_configured: tuple[str, bool] | None = None
# Requests arrive on several threads at once, and each one configures.
_lock = threading.Lock()


def _hex_digit(digit: str) -> str:
    return f"[{digit.lower()}{digit.upper()}]" if digit.isalpha() else digit


def _char_pattern(char: str) -> str:
    # Each character may reach a line as itself, percent-encoded (upper or
    # lower case hex, as any URL library writes it), `+` for a space in a
    # form-encoded query, or JSON-escaped.
    options = {re.escape(char)}
    options.add(
        "".join("%" + "".join(_hex_digit(d) for d in f"{b:02X}") for b in char.encode())
    )
    if char == " ":
        options.add(r"\+")
    escaped = json.dumps(char)[1:-1]
    if escaped != char:
        options.add(re.escape(escaped))
    return "(?:" + "|".join(sorted(options)) + ")"


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never appear in a log line or a response."""
    global _secrets, _secret_pattern
    with _lock:
        found = set(_secrets)
        found.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)
        if found == _secrets:
            return
        # Longest first, so that a secret containing another is replaced whole.
        ordered = sorted(found, key=len, reverse=True)
        _secret_pattern = re.compile(
            "|".join("".join(_char_pattern(c) for c in s) for s in ordered)
        )
        _secrets = frozenset(found)


def redact(text: str) -> str:
    """Return `text` with every registered secret value replaced, in any encoding."""
    if _secret_pattern is None:
        return text
    return _secret_pattern.sub(REDACTED, text)


def redact_value(value: Any) -> Any:
    """Redact strings anywhere inside a JSON-like value, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(key): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value


@contextmanager
def bound(**fields: str) -> Iterator[None]:
    """Attach fields such as job and run_id to every log line inside the block."""
    token = _context.set(tuple({**dict(_context.get()), **fields}.items()))
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the bound job and run id as labels, and redacts secrets from the record.

    It must run before any other filter of its handler: Cloud Logging's own
    filter reads the labels when it runs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        context = dict(_context.get())
        record.job = context.get("job", "-")
        record.run_id = context.get("run_id", "-")
        labels = {k: v for k, v in context.items() if k in ("job", "run_id")}
        if labels:
            record.labels = {**getattr(record, "labels", {}), **labels}

        if isinstance(record.msg, Mapping) and not record.args:
            # A structured payload stays a mapping, so that it stays JSON.
            record.msg = redact_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                # Filters run outside logging's error handling: a call with
                # the wrong arguments must not break the code that logs.
                message = f"{record.msg} {record.args!r}"
            record.msg = redact(message)
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        fields = getattr(record, "json_fields", None)
        if fields:
            record.json_fields = redact_value(fields)
        return True


class _Console:
    """`sys.stdout` or `sys.stderr` as it is at the time of each write.

    functions-framework swaps `sys.stdout` during a request when it adds
    execution ids, and a host may redirect it; a handler that kept the
    stream it saw first would write past either.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        stream = sys.stdout if self.name == "stdout" else sys.stderr
        return stream.write(text)

    def flush(self) -> None:
        stream = sys.stdout if self.name == "stdout" else sys.stderr
        stream.flush()


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.isoformat(timespec="milliseconds")


class _JsonFormatter(logging.Formatter):
    """Plain JSON lines, for LOG_FORMAT=json outside Cloud Functions."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "job": getattr(record, "job", "-"),
            "run_id": getattr(record, "run_id", "-"),
        }
        payload.update(getattr(record, "json_fields", None) or {})
        if record.exc_info or record.exc_text:
            payload["exception"] = record.exc_text or self.formatException(
                record.exc_info  # type: ignore[arg-type]
            )
        return json.dumps(payload, default=str)


def on_cloud_functions() -> bool:
    """True inside Cloud Functions / Cloud Run, which set K_SERVICE."""
    return bool(os.environ.get("K_SERVICE"))


def _structured_handler() -> logging.Handler:
    # Imported here: the library is heavy and only this environment needs it.
    from google.cloud.logging_v2.handlers import StructuredLogHandler

    class RedactingStructuredLogHandler(StructuredLogHandler):
        def format(self, record: logging.LogRecord) -> str:
            line: str = super().format(record)  # type: ignore[no-untyped-call]
            return redact(line)

    # The trace field links a line to its request only in the full form
    # `projects/P/traces/T`, which needs the project id.
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")
    return RedactingStructuredLogHandler(  # type: ignore[no-untyped-call]
        project_id=project or None, stream=_Console("stdout")
    )


def _handler(log_format: str, cloud: bool) -> logging.Handler:
    if log_format == "json" and cloud:
        return _structured_handler()
    handler = _ConsoleHandler(_Console("stderr" if log_format == "text" else "stdout"))
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            _UTCFormatter(
                "%(asctime)s %(levelname)s %(name)s [%(job)s %(run_id)s] %(message)s"
            )
        )
    return handler


def configure(settings: Settings) -> None:
    """Install the housekeeper handler once; later calls only refresh the secrets."""
    global _configured
    register_secrets(settings.secret_values())
    cloud = on_cloud_functions()
    log_format = settings.log_format
    if log_format == "auto":
        log_format = "json" if cloud else "text"

    logger = logging.getLogger("housekeeper")
    logger.setLevel(settings.log_level)
    with _lock:
        if _configured == (log_format, cloud):
            return
        for old in [h for h in logger.handlers if getattr(h, "_housekeeper", False)]:
            logger.removeHandler(old)
        handler = _handler(log_format, cloud)
        handler.filters.insert(0, ContextFilter())
        handler._housekeeper = True  # type: ignore[attr-defined]
        # First in line: its filter redacts the record before any other
        # handler, such as a test's capture, sees it.
        logger.handlers.insert(0, handler)
        # The library's own lines go to its handler only; the root logger is
        # the host application's to configure.
        logger.propagate = False
        _configured = (log_format, cloud)
