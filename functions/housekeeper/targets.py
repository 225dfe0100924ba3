"""What the HTTP targets do, behind the thin functions in `main.py`."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import flask

from housekeeper import SERVICE, __version__
from housekeeper.auth import require_bearer
from housekeeper.config import Settings, get_settings
from housekeeper.errors import HousekeeperError, MigrationMissingError
from housekeeper.http import (
    collect_params,
    error_response,
    json_response,
    parse_bool,
    require_method,
)
from housekeeper.jobs import available_jobs, load_job
from housekeeper.telemetry import configure

logger = logging.getLogger(__name__)


def _settings() -> Settings:
    settings = get_settings()
    configure(settings)
    return settings


def serve_job(request: flask.Request, job_name: str) -> flask.Response:
    """POST only, bearer secret required; see `runs.execute` for the rest."""
    try:
        settings = _settings()
        require_method(request, ("POST",))
        require_bearer(request.headers.get("Authorization"), settings)
        params = collect_params(request)

        # Imported late (after validation) so the runs module's dependencies
        # stay out of the health check's cold start.
        from housekeeper.runs import execute

        answer = execute(
            job_name, load_job(job_name), params, request.headers, settings
        )
    except HousekeeperError as exc:
        if exc.status >= 500:
            logger.error("%s refused: %s", job_name, exc.message)
        else:
            logger.warning("%s refused: %s", job_name, exc.message)
        return error_response(exc)
    except Exception as exc:
        logger.exception("%s failed before it could run", job_name)
        return error_response(exc)

    if answer.error is not None:
        return error_response(answer.error, extra=answer.body)
    return json_response(answer.body, answer.status)


def serve_health(request: flask.Request) -> flask.Response:
    """GET: service status; `?deep=1` also checks the database and the ledger."""
    try:
        settings = _settings()
        require_method(request, ("GET", "HEAD"))
        params = collect_params(request)
        deep = parse_bool(params, "deep")
        params.reject_unknown()
    except HousekeeperError as exc:
        return error_response(exc)

    body: dict[str, Any] = {
        "status": "healthy",
        "service": SERVICE,
        "version": __version__,
        "cron_secret_configured": bool(settings.cron_secret),
        "available_jobs": available_jobs(),
        "transport": settings.transport,
    }
    if not deep:
        return json_response(body)

    body.update(_deep_check(settings))
    return json_response(body, 200 if body["status"] == "healthy" else 503)


def _deep_check(settings: Settings) -> dict[str, Any]:
    from housekeeper.db import open_database
    from housekeeper.db.base import FUNCTION_MIGRATIONS, missing_function_error
    from housekeeper.runs import iso, utc_now

    try:
        with open_database(settings) as db:
            missing = db.missing_functions(sorted(FUNCTION_MIGRATIONS))
            summary = {} if missing else db.run_summary()
    except HousekeeperError as exc:
        logger.warning("deep health check failed: %s", exc.message)
        # The health check answers anyone: the code says what failed, the
        # message (host names, ports, roles) stays in the logs.
        failure: dict[str, Any] = {
            "transport": settings.transport,
            "ok": False,
            "error": exc.code,
        }
        if isinstance(exc, MigrationMissingError):
            # Which migration to apply is all this message says.
            failure["message"] = exc.message
        return {"status": "unhealthy", "database": failure}

    now = utc_now()
    jobs: dict[str, Any] = {}
    for job in available_jobs():
        hours = settings.overdue_after_h_for(job)
        overdue_after = timedelta(hours=hours)
        entry = dict(summary.get(job) or {})
        last = entry.get("last_progress_at")
        last_progress = datetime.fromisoformat(last) if last else None
        entry["overdue"] = last_progress is None or now - last_progress > overdue_after
        entry["overdue_after_h"] = hours
        jobs[job] = entry

    database: dict[str, Any] = {
        "transport": settings.transport,
        "ok": not missing,
        "missing_functions": missing,
        "checked_at": iso(now),
    }
    if missing:
        database["error"] = missing_function_error(missing[0]).message
    return {
        "status": "healthy" if not missing else "unhealthy",
        "database": database,
        "jobs": jobs,
    }
