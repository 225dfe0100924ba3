"""Purge a log table in short, adaptive batches.

Each batch is one call, one transaction. Its size follows the time the last
batch took, aiming at `PURGE_BATCH_TARGET_MS` and at well under the role's
statement timeout; a batch that still hits the timeout is retried smaller.
Memory stays flat: only counts cross the wire.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from housekeeper.db.base import BatchResult, PurgeTarget
from housekeeper.errors import (
    DependencyError,
    LockTimeoutError,
    StatementTimeoutError,
)
from housekeeper.runs import RunContext, iso

logger = logging.getLogger(__name__)

# The first batch is sized for a slow table (about 10 rows per millisecond of
# the target) and doubles while batches come back fast.
FIRST_ROWS_PER_MS = 10
MAX_LIMIT = 50_000
MIN_LIMIT = 50
# A statement-timeout budget is shared with the round trip and the commit.
TIMEOUT_SHARE = 0.4
MAX_CONSECUTIVE_TIMEOUTS = 8


def split_table(name: str) -> tuple[str, str]:
    """`schema.table` or `table` (in `public`)."""
    schema, _, table = name.rpartition(".")
    return (schema or "public", table)


def _target_ms(target: PurgeTarget, configured_ms: int) -> float:
    if target.statement_timeout_ms > 0:
        return min(configured_ms, target.statement_timeout_ms * TIMEOUT_SHARE)
    return float(configured_ms)


def _next_limit(
    limit: int, ms_per_row: list[float], target_ms: float, floor: int
) -> int:
    # Sized by the slower of the last two batches: the cost of a row varies
    # from batch to batch, and sizing by a lucky fast one alone made the next
    # batch overshoot the target by half as often as not. Grow or shrink by at
    # most 2x a step, so one odd batch cannot swing it.
    wanted = target_ms / max(max(ms_per_row[-2:]), 1e-6)
    return max(floor, min(MAX_LIMIT, int(min(2.0 * limit, max(0.5 * limit, wanted)))))


def purge_table(
    ctx: RunContext, table: str, column: str, cutoff: datetime, *, dry_run: bool
) -> dict[str, Any]:
    """Delete (or count, when dry) every row strictly older than `cutoff`."""
    schema, name = split_table(table)
    purge_started = time.monotonic()
    report: dict[str, Any] = {
        "table": f"{schema}.{name}",
        "deleted": 0,
        "cutoff": iso(cutoff),
        "batches": 0,
        "longest_batch_ms": 0.0,
        "elapsed_ms": 0.0,
        "status": "running",
    }
    # A dry run keeps `deleted` at 0, so a reader of the field is never misled.
    if dry_run:
        report["would_delete"] = 0
    counter = "would_delete" if dry_run else "deleted"

    try:
        target = ctx.db.purge_prepare(schema, name, column)
        if not target.indexed:
            report["warning"] = (
                f"no index leads with {column} on {target.qualified}; every batch "
                "scans the table. Create one (see README, 'Purge index')."
            )
            logger.warning("%s", report["warning"])
        target_ms = _target_ms(target, ctx.settings.purge_batch_target_ms)
        floor, timeouts = MIN_LIMIT, 0
        limit = max(floor, int(target_ms * FIRST_ROWS_PER_MS))
        after: datetime | None = None
        ms_per_row: list[float] = []

        while True:
            if ctx.out_of_time():
                report["status"] = "partial"
                report["remaining_estimate"] = ctx.db.purge_estimate(target, cutoff)
                break
            started = time.monotonic()
            try:
                batch: BatchResult = ctx.db.purge_batch(
                    target, cutoff, after, limit, dry_run=dry_run
                )
            except LockTimeoutError:
                # A session holds the table (a migration, a VACUUM FULL): do
                # not queue behind it and block its other writers; stop, and
                # let the next run continue.
                report["status"] = "partial"
                report["warning"] = (
                    f"{target.qualified} is locked by another session; "
                    "stopped, the next run continues"
                )
                logger.warning("%s", report["warning"])
                break
            except StatementTimeoutError:
                timeouts += 1
                if limit <= 1 or timeouts > MAX_CONSECUTIVE_TIMEOUTS:
                    raise
                limit, floor = max(1, limit // 4), 1
                logger.warning(
                    "purge batch hit the statement timeout; retrying with %d rows",
                    limit,
                )
                continue
            elapsed_ms = batch.elapsed_ms
            if elapsed_ms is None:
                elapsed_ms = (time.monotonic() - started) * 1000
            timeouts = 0
            report["batches"] += 1
            report[counter] += batch.count
            report["longest_batch_ms"] = round(
                max(report["longest_batch_ms"], elapsed_ms), 2
            )
            # A batch that took every row left below the cutoff answers the
            # cutoff itself as `last`: no further call is needed to see that
            # nothing is left (one round trip less, an HTTP call on Supabase).
            done = batch.last is not None and batch.last >= cutoff
            if batch.count == 0 or done or (dry_run and batch.count < limit):
                report["status"] = "dry_run" if dry_run else "success"
                break
            after = batch.last
            ms_per_row = [*ms_per_row[-1:], elapsed_ms / max(batch.count, 1)]
            limit = _next_limit(limit, ms_per_row, target_ms, floor)
    except DependencyError as exc:
        report["status"] = "failed"
        report["error"] = exc.message
        report["elapsed_ms"] = _elapsed_ms(purge_started)
        exc.partial = {"database": report}
        raise
    # The purge's own time, without the connection and the run ledger, so
    # that its rate (deleted / elapsed) can be read off a response.
    report["elapsed_ms"] = _elapsed_ms(purge_started)
    return report


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
