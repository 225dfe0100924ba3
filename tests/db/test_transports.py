"""One behavioural suite, run over both transports: the same SQL, the same answers.

Every test here takes the `database` fixture, so it runs once over the direct
Postgres transport and once over the Supabase transport (through the PostgREST
stand-in on the same embedded Postgres).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from housekeeper.config import load_settings
from housekeeper.db.base import FUNCTION_MIGRATIONS, Database
from housekeeper.errors import ConfigurationError, DatabaseError
from housekeeper.jobs.purge import purge_table
from housekeeper.runs import RunContext
from tests.support import create_log_table

CUTOFF = datetime(2026, 6, 1, 12, 0, 0, 123_456, tzinfo=UTC)


def _context(db: Database) -> RunContext:
    return RunContext(load_settings({}), db, "test-run", time.monotonic() + 60)


def _insert(conn, rows, table: str = "logs") -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            f'insert into {table} ("timestamp", message) values (%s, %s)', rows
        )


def _messages(conn) -> list[str]:
    return sorted(r[0] for r in conn.execute("select message from logs"))


def test_every_function_the_jobs_call_is_installed(database):
    assert database.missing_functions(sorted(FUNCTION_MIGRATIONS)) == []
    assert database.missing_functions(["housekeeper_nope"]) == ["housekeeper_nope"]


def test_purge_keeps_row_one_microsecond_newer_than_cutoff(database, conn):
    create_log_table(conn)
    _insert(
        conn,
        [
            (CUTOFF - timedelta(microseconds=1), "older by 1us"),
            (CUTOFF, "exactly at cutoff"),
            (CUTOFF + timedelta(microseconds=1), "newer by 1us"),
            (None, "null timestamp"),
        ],
    )
    report = purge_table(_context(database), "logs", "timestamp", CUTOFF, dry_run=False)
    assert (report["deleted"], report["status"]) == (1, "success")
    assert report["cutoff"] == "2026-06-01T12:00:00.123456+00:00"
    assert _messages(conn) == ["exactly at cutoff", "newer by 1us", "null timestamp"]


def test_purge_reads_naive_timestamps_as_utc(database, conn):
    create_log_table(conn, column_type="timestamp without time zone")
    naive = CUTOFF.replace(tzinfo=None)
    _insert(
        conn,
        [
            (naive - timedelta(microseconds=1), "older"),
            (naive, "at cutoff"),
            (naive + timedelta(hours=1), "newer"),
        ],
    )
    report = purge_table(_context(database), "logs", "timestamp", CUTOFF, dry_run=False)
    assert report["deleted"] == 1
    assert _messages(conn) == ["at cutoff", "newer"]


def test_dry_run_counts_and_deletes_nothing(database, conn):
    create_log_table(conn)
    _insert(conn, [(CUTOFF - timedelta(days=d), f"old {d}") for d in range(1, 8)])
    report = purge_table(_context(database), "logs", "timestamp", CUTOFF, dry_run=True)
    assert (report["would_delete"], report["deleted"]) == (7, 0)
    assert report["status"] == "dry_run"
    assert len(_messages(conn)) == 7


def test_batches_walk_a_tie_group_without_losing_or_repeating_rows(database, conn):
    create_log_table(conn)
    tie = CUTOFF - timedelta(days=1)
    _insert(conn, [(tie, f"tie {i}") for i in range(5)])
    _insert(conn, [(tie - timedelta(seconds=1), "before the tie")])
    target = database.purge_prepare("public", "logs", "timestamp")
    assert target.indexed

    dry = database.purge_batch(target, CUTOFF, None, 2, dry_run=True)
    assert (dry.count, dry.last) == (6, tie)

    counts, after = [], None
    while True:
        batch = database.purge_batch(target, CUTOFF, after, 2, dry_run=False)
        if batch.count == 0:
            break
        counts.append(batch.count)
        after = batch.last
    assert sum(counts) == 6
    assert max(counts) <= 2
    assert _messages(conn) == []


@pytest.mark.parametrize(
    ("table", "column", "column_type", "message"),
    [
        ("nope", "timestamp", "timestamptz", "table public.nope does not exist"),
        ("logs", "created", "timestamptz", "column created does not exist"),
        ("logs", "message", "timestamptz", "expected timestamptz or timestamp"),
    ],
)
def test_a_wrong_table_or_column_is_a_configuration_error(
    database, conn, table, column, column_type, message
):
    create_log_table(conn, column_type=column_type)
    with pytest.raises(ConfigurationError) as caught:
        database.purge_prepare("public", table, column)
    assert message in caught.value.message


def test_an_out_of_range_batch_limit_is_refused_by_the_function(database, conn):
    create_log_table(conn)
    target = database.purge_prepare("public", "logs", "timestamp")
    with pytest.raises(DatabaseError) as caught:
        database.purge_batch(target, CUTOFF, None, 0, dry_run=False)
    assert "p_limit must be between 1 and 100000" in caught.value.message


def _begin(database, job: str, **overrides):
    values = {
        "job": job,
        "run_id": str(uuid.uuid4()),
        "trigger": "manual",
        "scheduler_job": None,
        "schedule_time": None,
        "lease_s": 600,
        "skip_within_s": None,
        "params": {"transport": database.transport, "nested": {"a": [1, 2]}},
    }
    values.update(overrides)
    return values["run_id"], database.begin_run(**values)


def test_ledger_lock_admits_one_run_per_job(database, clean_ledger):
    first_id, first = _begin(database, "lock-test")
    assert first["outcome"] == "started"
    assert first["run"]["status"] == "running"

    _, second = _begin(database, "lock-test")
    assert second["outcome"] == "busy"
    assert second["run"]["run_id"] == first_id

    finished = database.finish_run(first_id, "success", {"rows_deleted": 3}, None)
    assert finished["updated"] is True
    assert finished["run"]["counts"] == {"rows_deleted": 3}
    again = database.finish_run(first_id, "failed", {}, "late")
    assert again["updated"] is False

    third_id, third = _begin(database, "lock-test")
    assert third["outcome"] == "started"
    database.finish_run(third_id, "success", {}, None)


def test_ledger_skips_a_recent_success_and_a_retried_schedule_time(
    database, clean_ledger
):
    schedule_time = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    run_id, begun = _begin(
        database, "skip-test", trigger="scheduler", schedule_time=schedule_time
    )
    assert begun["outcome"] == "started"
    assert begun["run"]["schedule_time"].startswith("2026-12-01T03:00:00")
    database.finish_run(run_id, "success", {}, None)

    _, retry = _begin(database, "skip-test", schedule_time=schedule_time)
    assert retry["outcome"] == "retry_done"
    _, fallback = _begin(database, "skip-test", trigger="render", skip_within_s=3600)
    assert fallback["outcome"] == "recent_success"


def test_ledger_takes_over_an_expired_lease(database, clean_ledger, conn):
    stale_id, _ = _begin(database, "lease-test")
    conn.execute(
        "update housekeeper.runs set lease_expires_at = now() - interval '1 second'"
        " where run_id = %s",
        (stale_id,),
    )
    _, taken = _begin(database, "lease-test")
    assert taken["outcome"] == "started"
    assert taken["abandoned"] == [stale_id]


def test_runs_are_listed_newest_first_and_summarised(database, clean_ledger):
    ids = []
    for _ in range(3):
        run_id, _ = _begin(database, "list-test")
        database.finish_run(run_id, "success", {}, None)
        ids.append(run_id)
    listed = database.list_runs("list-test", 2)
    assert [run["run_id"] for run in listed] == ids[::-1][:2]
    summary = database.run_summary()
    assert summary["list-test"]["last_status"] == "success"
