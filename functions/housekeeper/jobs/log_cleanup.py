"""cleanup-logs: purge the log table and the log folder past the retention."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from housekeeper.config import Settings
from housekeeper.errors import DependencyError, HousekeeperError
from housekeeper.http import Params, parse_bool, parse_int
from housekeeper.jobs.purge import purge_table
from housekeeper.jobs.sweep import sweep_folder
from housekeeper.runs import JobOutcome, RunContext, utc_now

logger = logging.getLogger(__name__)

JOB = "cleanup-logs"
REQUIRED_FUNCTIONS = [
    "housekeeper_purge_prepare",
    "housekeeper_purge_batch",
    "housekeeper_purge_estimate",
]


@dataclass(frozen=True)
class CleanupParams:
    """The validated parameters of one cleanup-logs request."""

    retention_days: int
    dry_run: bool


def parse_params(params: Params, settings: Settings) -> CleanupParams:
    """`retention_days` (1..3650, default `RETENTION_DAYS`) and `dry_run`."""
    return CleanupParams(
        retention_days=parse_int(
            params, "retention_days", settings.retention_days, low=1, high=3650
        ),
        dry_run=parse_bool(params, "dry_run"),
    )


def run(ctx: RunContext, params: CleanupParams) -> JobOutcome:
    """Purge rows, then files, strictly older than now minus the retention."""
    cutoff = utc_now() - timedelta(days=params.retention_days)
    settings = ctx.settings

    database: dict[str, Any]
    failure: HousekeeperError | None = None
    try:
        database = purge_table(
            ctx,
            settings.logs_table,
            settings.logs_timestamp_column,
            cutoff,
            dry_run=params.dry_run,
        )
    except HousekeeperError as exc:
        # The folder is independent of the database and of the table's
        # settings: sweep it anyway, then fail.
        failure = exc
        reached = exc.partial if isinstance(exc, DependencyError) else {}
        database = reached.get("database", {"status": "failed", "error": exc.message})

    files = sweep_folder(
        settings.log_dir,
        settings.log_file_patterns,
        cutoff,
        dry_run=params.dry_run,
        out_of_time=ctx.out_of_time,
    )
    results = {
        "retention_days": params.retention_days,
        "database": database,
        "files": files,
    }
    counts = {
        "rows_deleted": database.get("deleted", 0),
        "files_deleted": files.get("deleted_files", 0),
        "bytes_deleted": files.get("deleted_bytes", 0),
    }
    if params.dry_run:
        counts = {
            "rows_would_delete": database.get("would_delete", 0),
            "files_would_delete": files.get("would_delete_files", 0),
        }
    if isinstance(failure, DependencyError):
        failure.partial = results
    if failure is not None:
        raise failure

    if params.dry_run:
        status = "dry_run"
        message = (
            f"dry run: {database.get('would_delete', 0)} rows and "
            f"{files.get('would_delete_files', 0)} files are older than "
            f"{params.retention_days} days"
        )
    else:
        partial = "partial" in (database.get("status"), files.get("status"))
        status = "partial" if partial else "success"
        message = (
            f"deleted {counts['rows_deleted']} rows and {counts['files_deleted']} "
            f"files older than {params.retention_days} days"
        )
        if partial:
            message += "; time budget reached, the next run continues"
    return JobOutcome(status, message, results, counts)
