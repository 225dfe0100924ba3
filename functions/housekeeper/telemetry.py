"""Logging set-up: structured JSON on Cloud Functions, readable text elsewhere.

Configured once, at the entry point. Every handler carries a filter that adds
the current job and run id and removes any configured secret value from the
message, its arguments and its traceback.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

from housekeeper.config import Settings

REDACTED = "[redacted]"

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar(
    "housekeeper_log_context", default=()
)
_secrets: tuple[str, ...] = ()
_configured_format: str | None = None


def _variants(secret: str) -> set[str]:
    # A secret can also reach a log line percent-encoded, inside a URL.
    return {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}


def register_secrets(values: Iterable[str]) -> None:
    """Add values that must never appear in a log line or a response."""
    global _secrets
    found = set(_secrets)
    for value in values:
        if value and len(value) >= 4:
            found |= _variants(value)
    # Longest first, so that an encoded form is replaced before a shorter one.
    _secrets = tuple(sorted(found, key=len, reverse=True))


def redact(text: str) -> str:
    """Return `text` with every registered secret value replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings anywhere inside a JSON-like value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
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
    """Adds the bound job and run id, and redacts secrets from the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = dict(_context.get())
        record.job = context.get("job", "-")
        record.run_id = context.get("run_id", "-")
        labels = {k: v for k, v in context.items() if k in ("job", "run_id")}
        if labels:
            record.labels = {**getattr(record, "labels", {}), **labels}
        if _secrets:
            record.msg = redact(record.getMessage())
            record.args = None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
            fields = getattr(record, "json_fields", None)
            if fields:
                record.json_fields = redact_value(fields)
        return True


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
        return json.dumps(payload, default=str, ensure_ascii=False)


def on_cloud_functions() -> bool:
    """True inside Cloud Functions / Cloud Run, which set K_SERVICE."""
    return bool(os.environ.get("K_SERVICE"))


def _handler(log_format: str) -> logging.Handler:
    if log_format == "json" and on_cloud_functions():
        # Imported here: the library is heavy and only this environment needs it.
        from google.cloud.logging_v2.handlers import StructuredLogHandler

        return StructuredLogHandler(  # type: ignore[no-untyped-call]
            project_id=os.environ.get("GOOGLE_CLOUD_PROJECT"), stream=sys.stdout
        )
    handler = logging.StreamHandler(sys.stderr if log_format == "text" else sys.stdout)
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
    global _configured_format
    register_secrets(settings.secret_values())
    log_format = settings.log_format
    if log_format == "auto":
        log_format = "json" if on_cloud_functions() else "text"

    logger = logging.getLogger("housekeeper")
    logger.setLevel(settings.log_level)
    if _configured_format == log_format:
        return
    for old in [h for h in logger.handlers if getattr(h, "_housekeeper", False)]:
        logger.removeHandler(old)
    handler = _handler(log_format)
    handler.addFilter(ContextFilter())
    handler._housekeeper = True  # type: ignore[attr-defined]
    # First in line: its filter redacts the record before any other handler,
    # such as a test's capture, sees it.
    logger.handlers.insert(0, handler)
    # The library's own lines go to its handler only; the root logger is the
    # host application's to configure.
    logger.propagate = False
    _configured_format = log_format
