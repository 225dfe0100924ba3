"""One database interface; the transports differ only in how a function is called.

Every operation is a SQL function from `supabase/migrations/` that returns
jsonb. The direct transport runs `SELECT fn(...)`, the Supabase transport
POSTs to `/rest/v1/rpc/fn`: the same SQL, the same semantics.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from housekeeper.errors import DatabaseError, MigrationMissingError

LOG_PURGE_MIGRATION = "20261204000100_housekeeper_log_purge.sql"
RUN_LEDGER_MIGRATION = "20261204000200_housekeeper_run_ledger.sql"

# Which migration ships each function, so a missing one can be named.
FUNCTION_MIGRATIONS: dict[str, str] = {
    "housekeeper_missing_functions": LOG_PURGE_MIGRATION,
    "housekeeper_purge_prepare": LOG_PURGE_MIGRATION,
    "housekeeper_purge_batch": LOG_PURGE_MIGRATION,
    "housekeeper_purge_estimate": LOG_PURGE_MIGRATION,
    "housekeeper_begin_run": RUN_LEDGER_MIGRATION,
    "housekeeper_finish_run": RUN_LEDGER_MIGRATION,
    "housekeeper_list_runs": RUN_LEDGER_MIGRATION,
    "housekeeper_run_summary": RUN_LEDGER_MIGRATION,
}


def missing_function_error(function: str) -> MigrationMissingError:
    """The error for a function the database does not have."""
    migration = FUNCTION_MIGRATIONS.get(function, "the latest migrations")
    return MigrationMissingError(
        f"database function {function} is missing: apply supabase/migrations/"
        f"{migration} (see README, 'Supabase transport and migrations')",
        details={"function": function, "migration": migration},
    )


@dataclass(frozen=True)
class PurgeTarget:
    """A validated log table: where it is and how the purge may treat it."""

    schema: str
    table: str
    column: str
    with_time_zone: bool
    indexed: bool
    statement_timeout_ms: float

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class BatchResult:
    """What one purge batch deleted (or counted) and the newest timestamp it saw."""

    count: int
    last: datetime | None
    elapsed_ms: float | None = None


class Database(abc.ABC):
    """The operations the jobs need, over either transport."""

    transport: str = ""

    @abc.abstractmethod
    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        """Call a `public.housekeeper_*` function with named parameters."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the connection or client."""

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def missing_functions(self, names: list[str]) -> list[str]:
        """The functions among `names` that the database does not have."""
        result = self.call("housekeeper_missing_functions", {"p_names": names})
        return [str(name) for name in result]

    def require_functions(self, names: list[str]) -> None:
        """Raise `MigrationMissingError` naming the first absent function."""
        missing = self.missing_functions(names)
        if missing:
            raise missing_function_error(missing[0])

    def purge_prepare(self, schema: str, table: str, column: str) -> PurgeTarget:
        info = self.call(
            "housekeeper_purge_prepare",
            {"p_schema": schema, "p_table": table, "p_column": column},
        )
        return PurgeTarget(
            schema=schema,
            table=table,
            column=column,
            with_time_zone=bool(info["with_time_zone"]),
            indexed=bool(info["indexed"]),
            statement_timeout_ms=float(info["statement_timeout_ms"] or 0),
        )

    def purge_batch(
        self,
        target: PurgeTarget,
        cutoff: datetime,
        after: datetime | None,
        limit: int,
        *,
        dry_run: bool,
    ) -> BatchResult:
        result = self.call(
            "housekeeper_purge_batch",
            {
                "p_schema": target.schema,
                "p_table": target.table,
                "p_column": target.column,
                "p_cutoff": cutoff,
                "p_after": after,
                "p_limit": limit,
                "p_dry_run": dry_run,
            },
        )
        last = result.get("last")
        elapsed_ms = result.get("elapsed_ms")
        return BatchResult(
            count=int(result["count"]),
            last=_timestamp(last) if last is not None else None,
            elapsed_ms=float(elapsed_ms) if elapsed_ms is not None else None,
        )

    def purge_estimate(self, target: PurgeTarget, cutoff: datetime) -> int:
        result = self.call(
            "housekeeper_purge_estimate",
            {
                "p_schema": target.schema,
                "p_table": target.table,
                "p_column": target.column,
                "p_cutoff": cutoff,
            },
        )
        return int(result["estimate"] or 0)

    def begin_run(
        self,
        *,
        job: str,
        run_id: str,
        trigger: str,
        scheduler_job: str | None,
        schedule_time: datetime | None,
        lease_s: int,
        skip_within_s: int | None,
        params: Mapping[str, Any],
    ) -> dict[str, Any]:
        return dict(
            self.call(
                "housekeeper_begin_run",
                {
                    "p_job": job,
                    "p_run_id": run_id,
                    "p_trigger": trigger,
                    "p_scheduler_job": scheduler_job,
                    "p_schedule_time": schedule_time,
                    "p_lease_s": lease_s,
                    "p_skip_within_s": skip_within_s,
                    "p_params": dict(params),
                },
            )
        )

    def finish_run(
        self, run_id: str, status: str, counts: Mapping[str, Any], error: str | None
    ) -> dict[str, Any]:
        return dict(
            self.call(
                "housekeeper_finish_run",
                {
                    "p_run_id": run_id,
                    "p_status": status,
                    "p_counts": dict(counts),
                    "p_error": error,
                },
            )
        )

    def list_runs(self, job: str | None, limit: int) -> list[dict[str, Any]]:
        return list(
            self.call("housekeeper_list_runs", {"p_job": job, "p_limit": limit})
        )

    def run_summary(self) -> dict[str, Any]:
        return dict(self.call("housekeeper_run_summary", {}))


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise DatabaseError(
            f"unexpected timestamp from the database: {value!r}"
        ) from exc
