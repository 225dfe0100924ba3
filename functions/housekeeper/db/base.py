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

from housekeeper.config import MediaSource
from housekeeper.errors import DatabaseError, MigrationMissingError

LOG_PURGE_MIGRATION = "20261204000100_housekeeper_log_purge.sql"
RUN_LEDGER_MIGRATION = "20261204000200_housekeeper_run_ledger.sql"
MEDIA_MIGRATION = "20261204000300_housekeeper_media_migration.sql"

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
    "housekeeper_media_claim": MEDIA_MIGRATION,
    "housekeeper_media_count": MEDIA_MIGRATION,
    "housekeeper_media_record": MEDIA_MIGRATION,
    "housekeeper_media_swap": MEDIA_MIGRATION,
    "housekeeper_media_release": MEDIA_MIGRATION,
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
        """`schema.table`, as reports name it."""
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class BatchResult:
    """What one purge batch deleted (or counted) and the newest timestamp it saw."""

    count: int
    last: datetime | None
    elapsed_ms: float | None = None


@dataclass(frozen=True)
class MediaItem:
    """One claimed URL: a row's column, or one element of its array column.

    `url` is the signed CDN URL as stored; it is a credential and never logged.
    """

    source: str
    row_id: str
    position: int
    url: str
    url_hash: str
    attempts: int
    status: str


def _source_args(source: MediaSource) -> dict[str, Any]:
    schema, _, table = source.table.rpartition(".")
    return {
        "p_schema": schema or "public",
        "p_table": table,
        "p_id_column": source.id_column,
        "p_url_column": source.url_column,
        "p_kind": source.kind,
    }


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
        """Resolve the log table: column type, index, the role's statement timeout."""
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
        """Delete (or count) one short batch of rows older than `cutoff`."""
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
            last=_resume_point(last),
            elapsed_ms=float(elapsed_ms) if elapsed_ms is not None else None,
        )

    def purge_estimate(self, target: PurgeTarget, cutoff: datetime) -> int:
        """The planner's estimate of rows still older than `cutoff`."""
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
        """Take the job's lock and record a run, or say why not (busy, recent)."""
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
        """Record how a run ended; a run taken over meanwhile stays abandoned."""
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
        """The newest ledger entries, optionally of one job."""
        return list(
            self.call("housekeeper_list_runs", {"p_job": job, "p_limit": limit})
        )

    def run_summary(self) -> dict[str, Any]:
        """Per job: the last run, the last success and the last progress."""
        return dict(self.call("housekeeper_run_summary", {}))

    def media_claim(
        self,
        source: MediaSource,
        *,
        hosts: tuple[str, ...],
        exclude_prefix: str | None,
        run_id: str,
        limit: int,
        lease_s: int,
    ) -> list[MediaItem]:
        """Claim up to `limit` eligible items of `source`, in id and position order."""
        result = self.call(
            "housekeeper_media_claim",
            {
                "p_source": source.name,
                **_source_args(source),
                "p_hosts": list(hosts),
                "p_exclude_prefix": exclude_prefix,
                "p_run_id": run_id,
                "p_limit": limit,
                "p_lease_s": lease_s,
            },
        )
        return [
            MediaItem(
                source=source.name,
                row_id=str(item["row_id"]),
                position=int(item["position"]),
                url=str(item["url"]),
                url_hash=str(item["url_hash"]),
                attempts=int(item["attempts"]),
                status=str(item["status"]),
            )
            for item in result["items"]
        ]

    def media_count(
        self,
        source: MediaSource,
        *,
        hosts: tuple[str, ...],
        exclude_prefix: str | None,
    ) -> dict[str, int]:
        """Items of `source` on the CDN: eligible now, backing off, expired, ..."""
        result = self.call(
            "housekeeper_media_count",
            {
                "p_source": source.name,
                **_source_args(source),
                "p_hosts": list(hosts),
                "p_exclude_prefix": exclude_prefix,
            },
        )
        return {str(key): int(value) for key, value in result.items()}

    def media_record(
        self,
        item: MediaItem,
        *,
        run_id: str,
        status: str,
        error: str | None,
        r2_key: str | None,
        bytes_in: int | None,
        bytes_out: int | None,
        retry_base_s: int,
        retry_max_s: int,
    ) -> dict[str, Any]:
        """Record how an item ended and release its claim (`updated` false if lost)."""
        return dict(
            self.call(
                "housekeeper_media_record",
                {
                    "p_source": item.source,
                    "p_row_id": item.row_id,
                    "p_position": item.position,
                    "p_url_hash": item.url_hash,
                    "p_run_id": run_id,
                    "p_status": status,
                    "p_error": error,
                    "p_r2_key": r2_key,
                    "p_bytes_in": bytes_in,
                    "p_bytes_out": bytes_out,
                    "p_retry_base_s": retry_base_s,
                    "p_retry_max_s": retry_max_s,
                },
            )
        )

    def media_swap(self, source: MediaSource, item: MediaItem, new_url: str) -> bool:
        """Replace the item's URL only if the row still holds it; True if it did."""
        result = self.call(
            "housekeeper_media_swap",
            {
                **_source_args(source),
                "p_row_id": item.row_id,
                "p_position": item.position,
                "p_old_url": item.url,
                "p_new_url": new_url,
            },
        )
        return bool(result["applied"])

    def media_release(self, run_id: str) -> int:
        """Release the claims a run still holds; returns how many."""
        result = self.call("housekeeper_media_release", {"p_run_id": run_id})
        return int(result["released"])


def _resume_point(value: Any) -> datetime | None:
    """Where the next batch starts; None (from the beginning) when the database
    sent a time Python cannot hold, such as `-infinity` or a date BC."""
    if value is None:
        return None
    if isinstance(value, str) and (value.endswith(" BC") or value == "-infinity"):
        return None
    return _timestamp(value)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise DatabaseError(
            f"unexpected timestamp from the database: {value!r}"
        ) from exc
