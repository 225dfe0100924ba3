"""Request parameters in, JSON responses and status codes out.

Parameters come from the query string and from a JSON body whatever its
Content-Type (Cloud Scheduler sends `application/octet-stream` unless told
otherwise). Every parser raises `InvalidParameterError` naming the parameter,
so a bad request is refused before any query runs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import flask

from housekeeper.errors import (
    DependencyError,
    HousekeeperError,
    InvalidParameterError,
    MethodNotAllowedError,
    UnauthorizedError,
)
from housekeeper.telemetry import redact, redact_value

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# ASCII digits only (`\d` would take any script's), and few of them: int()
# refuses more than 4,300 digits with an error of its own.
_INTEGER = re.compile(r"^[+-]?[0-9]{1,12}$")
_DURATION = re.compile(r"^([0-9]{1,9})\s*(s|m|h|d)$")
_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


MISSING: Any = object()


class Params:
    """The merged request parameters, with a record of which were read."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)
        self._read: set[str] = set()

    def raw(self, name: str) -> Any:
        """The value as sent (JSON null included), or `MISSING` when absent."""
        self._read.add(name)
        return self._values.get(name, MISSING)

    def reject_unknown(self) -> None:
        """Refuse parameters no parser asked for, such as a misspelt `dry_run`."""
        unknown = sorted(set(self._values) - self._read)
        if unknown:
            raise InvalidParameterError(unknown[0], f"unknown parameter {unknown[0]!r}")


def _refuse_conflicts(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose repeated key disagrees with itself is refused:
    `{"dry_run": true, "dry_run": false}` must never purge."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document and _canonical(document[key]) != _canonical(value):
            raise InvalidParameterError(
                key, f"parameter {key!r} is given more than once with different values"
            )
        document[key] = value
    return document


def _canonical(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


def collect_params(request: flask.Request) -> Params:
    """Merge the query string and a JSON object body; the same key twice must agree."""
    merged: dict[str, Any] = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(set(values)) > 1:
            raise InvalidParameterError(
                name,
                f"parameter {name!r} is given more than once with different values",
            )
        merged[name] = values[0]

    body = request.get_data(cache=True)
    if len(body) > MAX_BODY_BYTES:
        raise InvalidParameterError(
            "body", f"request body exceeds {MAX_BODY_BYTES} bytes"
        )
    if body.strip():
        try:
            document = json.loads(body, object_pairs_hook=_refuse_conflicts)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidParameterError(
                "body", "request body is not valid JSON"
            ) from None
        if not isinstance(document, dict):
            raise InvalidParameterError("body", "request body must be a JSON object")
        for name, value in document.items():
            if isinstance(value, dict | list):
                raise InvalidParameterError(
                    name, f"parameter {name!r} must be a scalar"
                )
            if name in merged and _canonical(merged[name]) != _canonical(value):
                raise InvalidParameterError(
                    name,
                    f"parameter {name!r} has different values in the query string "
                    "and the body",
                )
            merged[name] = value
    return Params(merged)


def parse_int(params: Params, name: str, default: int, *, low: int, high: int) -> int:
    """An integer in [low, high]; JSON numbers with a fraction are refused."""
    value = params.raw(name)
    if value is MISSING:
        return default
    if value is None or isinstance(value, bool):
        value = None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        value = int(value.strip()) if _INTEGER.match(value.strip()) else None
    if not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(
            name, f"{name} must be an integer from {low} to {high}"
        )
    return value


def parse_float(
    params: Params, name: str, default: float | None, *, low: float, high: float
) -> float | None:
    """A finite number in [low, high]."""
    value = params.raw(name)
    if value is MISSING:
        return default
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or not low <= number <= high:
        raise InvalidParameterError(
            name, f"{name} must be a number from {low:g} to {high:g}"
        )
    return number


def parse_bool(params: Params, name: str, default: bool = False) -> bool:
    """true/false, 1/0, yes/no, on/off; a bare `?dry_run` means true."""
    value = params.raw(name)
    if value is MISSING:
        return default
    if isinstance(value, bool):
        return value
    if value is None:
        raise InvalidParameterError(name, f"{name} must be true or false")
    text = _canonical(value).strip().lower()
    if text == "":
        return True
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidParameterError(name, f"{name} must be true or false")


def parse_choice(
    params: Params, name: str, default: str, choices: Iterable[str]
) -> str:
    """One of a closed set of strings."""
    options = tuple(choices)
    value = params.raw(name)
    if value is MISSING:
        return default
    text = _canonical(value).strip().lower()
    if text not in options:
        raise InvalidParameterError(name, f"{name} must be one of {', '.join(options)}")
    return text


def parse_duration(
    params: Params, name: str, *, low_s: int = 60, high_s: int = 30 * 86400
) -> timedelta | None:
    """A duration such as `90m`, `6h` or `2d` (a bare number means seconds)."""
    value = params.raw(name)
    if value is MISSING:
        return None
    text = _canonical(value).strip().lower()
    if _INTEGER.match(text):
        text += "s"
    match = _DURATION.match(text)
    if not match:
        raise InvalidParameterError(
            name, f"{name} must be a duration such as 90m, 6h or 2d"
        )
    seconds = int(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
    if not low_s <= seconds <= high_s:
        raise InvalidParameterError(
            name, f"{name} must be between {low_s}s and {high_s // 86400}d"
        )
    return timedelta(seconds=seconds)


def parse_timestamp(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp with offset, or None when absent or unusable."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else None


def json_response(
    body: Mapping[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> flask.Response:
    """Serialise `body` with every registered secret removed."""
    # ASCII escapes: a lone surrogate (from a hostile key or an undecodable
    # file name) cannot be encoded as UTF-8 but can always be escaped.
    text = json.dumps(redact_value(dict(body)), default=str)
    response = flask.Response(text + "\n", status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def error_response(
    error: BaseException, *, extra: Mapping[str, Any] | None = None
) -> flask.Response:
    """The one mapping from errors to `{"error": {"code", "message"}}` responses."""
    headers: dict[str, str] = {}
    if isinstance(error, HousekeeperError):
        status, code, message = error.status, error.code, redact(error.message)
        if isinstance(error, UnauthorizedError):
            headers["WWW-Authenticate"] = 'Bearer realm="housekeeper"'
        if isinstance(error, MethodNotAllowedError):
            headers["Allow"] = ", ".join(error.allowed)
    else:
        status, code, message = 500, "internal_error", "internal error; see the logs"

    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if isinstance(error, InvalidParameterError):
        body["error"]["parameter"] = error.parameter
    body.update(extra or {})
    if isinstance(error, DependencyError) and error.partial:
        body.setdefault("results", error.partial)
    return json_response(body, status, headers)


def require_method(request: flask.Request, allowed: tuple[str, ...]) -> None:
    """Raise `MethodNotAllowedError` unless the request uses one of `allowed`."""
    if request.method not in allowed:
        raise MethodNotAllowedError(request.method, allowed)
