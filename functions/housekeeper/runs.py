"""Run safety: the ledger, the one-run-per-job lock and the fallback skip.

`execute` is the request path every job target shares: resolve the trigger,
parse and validate every parameter before touching the database, take the
lock in the database, run the job, record how it ended, answer.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from housekeeper.config import Settings
from housekeeper.db import Database, open_database
from housekeeper.errors import DependencyError, HousekeeperError
from housekeeper.http import (
    Params,
    parse_choice,
    parse_duration,
    parse_float,
    parse_timestamp,
)
from housekeeper.telemetry import bound, redact

logger = logging.getLogger(__name__)

TRIGGERS = ("scheduler", "render", "manual", "local")
OK_STATUSES = ("success", "partial", "dry_run", "skipped")


def utc_now() -> datetime:
    """Now, in UTC: the host's local time never enters a result."""
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with offset."""
    return moment.astimezone(UTC).isoformat() if moment else None


@dataclass(frozen=True)
class Trigger:
    """Who asked for this run: a Cloud Scheduler job, the fallback, a person."""

    kind: str
    scheduler_job: str | None = None
    schedule_time: datetime | None = None


@dataclass
class RunContext:
    """What a job may use while it runs."""

    settings: Settings
    db: Database
    run_id: str
    deadline: float

    def out_of_time(self) -> bool:
        """True once the run's time budget is spent: stop cleanly, `partial`."""
        return time.monotonic() >= self.deadline


@dataclass
class JobOutcome:
    """How a job ended: a status, a one-line message and its results."""

    status: str
    message: str
    results: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)


class Job(Protocol):
    """A job module: `parse_params` validates, `run` works."""

    def parse_params(self, params: Params, settings: Settings) -> Any: ...

    def run(self, ctx: RunContext, params: Any) -> JobOutcome: ...


@dataclass
class Answer:
    """A job's HTTP answer before serialisation."""

    status: int
    body: dict[str, Any]
    error: HousekeeperError | BaseException | None = None


def resolve_trigger(params: Params, headers: Mapping[str, str] | Any) -> Trigger:
    """Trigger identity from Cloud Scheduler's headers or the `trigger` parameter.

    The schedule time is what makes a retry recognisable: Cloud Scheduler
    sends the same `X-CloudScheduler-ScheduleTime` on every attempt of one
    scheduled run.
    """
    explicit = parse_choice(params, "trigger", "", TRIGGERS) or None
    from_scheduler = headers.get("X-CloudScheduler", "").strip().lower() == "true"
    kind = explicit or ("scheduler" if from_scheduler else "manual")
    if not from_scheduler:
        return Trigger(kind)
    raw_time = headers.get("X-CloudScheduler-ScheduleTime")
    schedule_time = parse_timestamp(raw_time)
    if raw_time and schedule_time is None:
        logger.warning(
            "X-CloudScheduler-ScheduleTime %r is not an RFC 3339 time; a retry of "
            "this run will not be recognised",
            raw_time[:64],
        )
    return Trigger(
        kind,
        scheduler_job=headers.get("X-CloudScheduler-JobName") or None,
        schedule_time=schedule_time,
    )


def execute(
    job_name: str,
    job: Job,
    params: Params,
    headers: Mapping[str, str] | Any,
    settings: Settings,
    *,
    database: Callable[[Settings], Database] = open_database,
) -> Answer:
    """Validate, lock, run and record one job run; never raises.

    Every parameter is parsed before the database is opened, so a bad request
    costs no connection. The lock is the ledger's `running` row: taken in the
    database, it holds across processes, triggers and transports.
    """
    started_at = utc_now()
    started = time.monotonic()
    run_id = str(uuid.uuid4())
    base = {"job": job_name, "run_id": run_id, "started_at": iso(started_at)}

    def finished(body: dict[str, Any]) -> dict[str, Any]:
        return {
            **base,
            **body,
            "finished_at": iso(utc_now()),
            "duration_ms": round((time.monotonic() - started) * 1000),
        }

    with bound(job=job_name, run_id=run_id):
        try:
            trigger = resolve_trigger(params, headers)
            job_params = job.parse_params(params, settings)
            budget_s = parse_float(
                params,
                "time_budget_s",
                settings.time_budget_s,
                low=1,
                high=settings.function_timeout_s,
            )
            skip_within = parse_duration(params, "skip_if_succeeded_within")
            params.reject_unknown()
        except HousekeeperError as exc:
            logger.warning("%s refused: %s", job_name, exc.message)
            return Answer(exc.status, {}, exc)
        except Exception as exc:
            logger.exception("%s crashed while reading its parameters", job_name)
            return Answer(500, {}, exc)

        db: Database | None = None
        try:
            db = database(settings)
            begin = db.begin_run(
                job=job_name,
                run_id=run_id,
                trigger=trigger.kind,
                scheduler_job=trigger.scheduler_job,
                schedule_time=trigger.schedule_time,
                lease_s=settings.run_lease_s,
                skip_within_s=int(skip_within.total_seconds()) if skip_within else None,
                params={"transport": db.transport},
            )
            for stale in begin.get("abandoned") or []:
                logger.warning(
                    "%s: run %s had an expired lease; marked abandoned", job_name, stale
                )
            if begin["outcome"] != "started":
                return _skipped(job_name, begin, finished)

            ctx = RunContext(settings, db, run_id, started + (budget_s or 0))
            try:
                outcome = job.run(ctx, job_params)
            except DependencyError as exc:
                _record(db, run_id, "failed", numeric_leaves(exc.partial), exc.message)
                raise
            except HousekeeperError as exc:
                _record(db, run_id, "failed", {}, exc.message)
                raise
            except Exception as exc:
                _record(
                    db, run_id, "failed", {}, f"internal error: {type(exc).__name__}"
                )
                raise
            _record(db, run_id, outcome.status, outcome.counts, None)
        except HousekeeperError as exc:
            body = finished({"status": "failed", "trigger": trigger.kind})
            partial = exc.partial if isinstance(exc, DependencyError) else {}
            _summary(
                logging.ERROR,
                job_name,
                "failed",
                body,
                exc.message,
                numeric_leaves(partial),
            )
            return Answer(exc.status, body, exc)
        except Exception as exc:
            body = finished({"status": "failed", "trigger": trigger.kind})
            logger.exception(
                "%s crashed after %d ms",
                job_name,
                body["duration_ms"],
                extra={"json_fields": {"job": job_name, "status": "failed"}},
            )
            return Answer(500, body, exc)
        finally:
            if db is not None:
                db.close()

        body = finished(
            {
                "status": outcome.status,
                "trigger": trigger.kind,
                "message": outcome.message,
                "results": outcome.results,
            }
        )
        _summary(
            logging.INFO,
            job_name,
            outcome.status,
            body,
            outcome.message,
            outcome.counts,
        )
        return Answer(200, body)


def _skipped(
    job_name: str,
    begin: Mapping[str, Any],
    finished: Callable[[dict[str, Any]], dict[str, Any]],
) -> Answer:
    found = begin.get("run") or {}
    reasons = {
        "busy": (409, f"another {job_name} run ({found.get('run_id')}) is in progress"),
        "retry_done": (
            200,
            f"this schedule time already succeeded in run {found.get('run_id')}",
        ),
        "recent_success": (
            200,
            f"{job_name} succeeded at {found.get('finished_at')} "
            f"(run {found.get('run_id')})",
        ),
    }
    status, message = reasons[begin["outcome"]]
    body = finished(
        {
            "status": "skipped",
            "reason": begin["outcome"],
            "message": message,
            "results": {},
            "found_run": found,
        }
    )
    if begin["outcome"] == "busy":
        body["active_run_id"] = found.get("run_id")
    _summary(logging.INFO, job_name, "skipped", body, message)
    return Answer(status, body)


def numeric_leaves(results: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers inside a job's (partial) results, in the same nesting.

    A failed run has no summary counts of its own, only the results it
    reached; the ledger keeps their numbers. Text (a table name, an error
    message that may quote a server) stays out: the error has its own column,
    redacted.
    """
    found: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            inner = numeric_leaves(value)
            if inner:
                found[key] = inner
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[key] = value
    return found


def _record(
    db: Database, run_id: str, status: str, counts: Mapping[str, Any], error: str | None
) -> None:
    # The ledger is read by people with database access only, but a secret
    # has no business there either.
    error = redact(error) if error else error
    try:
        result = db.finish_run(run_id, status, counts, error)
    except HousekeeperError as exc:
        # The run's own outcome is what the caller must hear; a ledger write
        # that fails on top of it is logged, not raised.
        logger.warning("could not record the end of run %s: %s", run_id, exc.message)
        return
    if not result.get("updated"):
        logger.warning(
            "run %s was taken over before it finished; the ledger keeps it as %s",
            run_id,
            (result.get("run") or {}).get("status"),
        )


def _summary(
    level: int,
    job_name: str,
    status: str,
    body: Mapping[str, Any],
    message: str,
    counts: Mapping[str, Any] | None = None,
) -> None:
    fields = {
        "job": job_name,
        "status": status,
        "run_id": body.get("run_id"),
        "trigger": body.get("trigger"),
        "duration_ms": body.get("duration_ms"),
        "counts": dict(counts or {}),
    }
    logger.log(
        level,
        "%s %s in %s ms: %s",
        job_name,
        status,
        body.get("duration_ms"),
        message,
        extra={"json_fields": fields},
    )
