"""The purge deletes exactly the rows strictly older than the UTC cutoff."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from housekeeper.config import load_settings
from housekeeper.db.postgres import PostgresDatabase
from housekeeper.errors import ConfigurationError
from housekeeper.jobs.purge import purge_table
from housekeeper.runs import RunContext
from tests.support import create_log_table

CUTOFF = datetime(2026, 6, 1, 12, 0, 0, 250_000, tzinfo=UTC)


@pytest.fixture
def ctx(pg):
    """A run context on the test database; its connection is closed afterwards."""
    opened: list[PostgresDatabase] = []

    def make(*, budget_s: float = 60.0) -> RunContext:
        settings = load_settings({"DATABASE_URL": pg.url})
        db = PostgresDatabase(pg.url)
        opened.append(db)
        return RunContext(settings, db, "test-run", time.monotonic() + budget_s)

    yield make
    for db in opened:
        db.close()


def _messages(conn, table: str = "logs") -> list[str]:
    return sorted(r[0] for r in conn.execute(f"select message from {table}"))


def _insert(conn, rows, table: str = "logs") -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            f'insert into {table} ("timestamp", message) values (%s, %s)', rows
        )


def test_purge_keeps_row_one_microsecond_newer_than_cutoff(ctx, conn):
    create_log_table(conn)
    _insert(
        conn,
        [
            (CUTOFF - timedelta(microseconds=1), "older by 1us"),
            (CUTOFF, "exactly at cutoff"),
            (CUTOFF + timedelta(microseconds=1), "newer by 1us"),
            (CUTOFF + timedelta(seconds=1), "newer by 1s"),
            (None, "null timestamp"),
        ],
    )
    report = purge_table(ctx(), "logs", "timestamp", CUTOFF, dry_run=False)
    assert report["deleted"] == 1
    assert report["status"] == "success"
    assert _messages(conn) == [
        "exactly at cutoff",
        "newer by 1s",
        "newer by 1us",
        "null timestamp",
    ]


def test_purge_reads_naive_timestamps_as_utc_whatever_the_session_zone(ctx, conn):
    create_log_table(conn, column_type="timestamp without time zone")
    naive = CUTOFF.replace(tzinfo=None)
    _insert(
        conn,
        [
            (naive - timedelta(seconds=1), "older"),
            (naive, "at cutoff"),
            (naive + timedelta(seconds=1), "newer"),
        ],
    )
    conn.execute("alter database postgres set timezone = 'Pacific/Kiritimati'")
    try:
        report = purge_table(ctx(), "logs", "timestamp", CUTOFF, dry_run=False)
    finally:
        conn.execute("alter database postgres reset timezone")
    assert report["deleted"] == 1
    assert _messages(conn) == ["at cutoff", "newer"]


def test_purge_cutoff_does_not_depend_on_process_time_zone(
    call, conn, monkeypatch, clean_ledger
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (now() - interval '30 days' - interval '1 minute', 'old'),"
        " (now() - interval '30 days' + interval '1 minute', 'young')"
    )
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        reply = call("cleanup_logs", json={"retention_days": 30})
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert reply.status == 200
    assert reply.json["results"]["database"]["cutoff"].endswith("+00:00")
    assert _messages(conn) == ["young"]


def test_dry_run_counts_and_deletes_nothing(call, conn, clean_ledger):
    create_log_table(conn)
    conn.execute(
        "insert into logs (\"timestamp\", message) select now() - interval '60 days',"
        " 'old' from generate_series(1, 1234)"
    )
    reply = call("cleanup_logs", json={"dry_run": True})
    assert reply.status == 200
    database = reply.json["results"]["database"]
    assert database["would_delete"] == 1234
    assert database["deleted"] == 0
    assert conn.execute("select count(*) from logs").fetchone()[0] == 1234


def test_dry_run_batch_counts_a_whole_tie_group_once(pg, conn):
    create_log_table(conn)
    stamp = CUTOFF - timedelta(days=3)
    _insert(conn, [(stamp, "tie")] * 25 + [(stamp - timedelta(days=1), "early")] * 3)
    db = PostgresDatabase(pg.url)
    target = db.purge_prepare("public", "logs", "timestamp")
    total, after = 0, None
    for _ in range(10):
        batch = db.purge_batch(target, CUTOFF, after, 10, dry_run=True)
        total += batch.count
        if batch.count < 10:
            break
        after = batch.last
    db.close()
    assert total == 28


def test_purge_in_batches_deletes_a_tie_group_larger_than_a_batch(pg, conn):
    create_log_table(conn)
    stamp = CUTOFF - timedelta(days=3)
    _insert(conn, [(stamp, "tie")] * 120 + [(CUTOFF, "kept")])
    db = PostgresDatabase(pg.url)
    target = db.purge_prepare("public", "logs", "timestamp")
    after, deleted = None, 0
    while True:
        batch = db.purge_batch(target, CUTOFF, after, 50, dry_run=False)
        if batch.count == 0:
            break
        deleted += batch.count
        after = batch.last
    db.close()
    assert deleted == 120
    assert _messages(conn) == ["kept"]


def test_time_budget_spent_stops_with_partial_and_estimate(ctx, conn):
    create_log_table(conn)
    conn.execute(
        "insert into logs (\"timestamp\", message) select timestamptz '2026-01-01',"
        " 'old' from generate_series(1, 500)"
    )
    conn.execute("analyze logs")
    report = purge_table(ctx(budget_s=-1), "logs", "timestamp", CUTOFF, dry_run=False)
    assert report["status"] == "partial"
    assert report["deleted"] == 0
    assert report["remaining_estimate"] > 0


def test_missing_table_is_a_configuration_error_naming_it(ctx, conn):
    conn.execute("drop table if exists public.nope")
    with pytest.raises(ConfigurationError, match="nope"):
        purge_table(ctx(), "nope", "timestamp", CUTOFF, dry_run=False)


def test_non_timestamp_column_is_refused(ctx, conn):
    create_log_table(conn, column_type="date")
    with pytest.raises(ConfigurationError, match="expected timestamptz or timestamp"):
        purge_table(ctx(), "logs", "timestamp", CUTOFF, dry_run=False)


def test_missing_index_is_reported_and_purge_still_exact(ctx, conn):
    create_log_table(conn, index=False)
    _insert(conn, [(CUTOFF - timedelta(days=1), "old"), (CUTOFF, "kept")])
    report = purge_table(ctx(), "logs", "timestamp", CUTOFF, dry_run=False)
    assert "no index" in report["warning"]
    assert _messages(conn) == ["kept"]


def test_mixed_case_table_and_column_names_are_quoted(ctx, conn):
    create_log_table(conn, "AppLogs", column="CreatedAt")
    conn.execute(
        'insert into "AppLogs" ("CreatedAt", message) values'
        " (timestamptz '2026-01-01', 'old'), (timestamptz '2026-12-01', 'new')"
    )
    report = purge_table(ctx(), "AppLogs", "CreatedAt", CUTOFF, dry_run=False)
    assert report["deleted"] == 1
    assert report["table"] == "public.AppLogs"


def test_statement_timeout_of_50ms_purge_of_200k_rows_finishes_inside_it(
    call, conn, pg, set_env, clean_ledger, leak_guard
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message, context)'
        " select now() - interval '40 days' - g * interval '1 second', 'old',"
        " jsonb_build_object('payload', repeat('x', 200))"
        " from generate_series(1, 200000) g"
    )
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '1 day', 'new' from generate_series(1, 1000)"
    )
    conn.execute("vacuum analyze logs")
    conn.execute("drop role if exists purger")
    conn.execute("create role purger login password 'purger-pw-1234'")
    conn.execute("grant usage on schema public to purger")
    conn.execute("grant select, delete on logs to purger")
    conn.execute("grant execute on all functions in schema public to purger")
    conn.execute("alter role purger set statement_timeout = '50ms'")
    set_env(DATABASE_URL=pg.url_for("purger", "purger-pw-1234"))

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    database = reply.json["results"]["database"]
    assert database["deleted"] == 200000
    assert database["longest_batch_ms"] < 50
    assert not any("statement timeout" in line for line in leak_guard.texts)
    assert conn.execute("select count(*) from logs").fetchone()[0] == 1000


def test_database_dying_mid_purge_answers_503_with_counts_so_far(
    call, conn, clean_ledger
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days' + g * interval '1 second', 'old'"
        " from generate_series(1, 3000) g"
    )
    # Deleting the newest expired row kills the session, after earlier batches
    # have committed.
    conn.execute(
        "create or replace function public.die_on_delete() returns trigger"
        " language plpgsql as $$ begin"
        " if old.id = 3000 then perform pg_terminate_backend(pg_backend_pid()); end if;"
        " return old; end $$"
    )
    conn.execute(
        "create trigger die before delete on logs for each row"
        " execute function public.die_on_delete()"
    )
    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 503
    body = reply.json
    assert body["error"]["code"] == "database_unavailable"
    assert body["status"] == "failed"
    deleted = body["results"]["database"]["deleted"]
    assert 0 < deleted < 3000
    assert conn.execute("select count(*) from logs").fetchone()[0] == 3000 - deleted
    ledger = conn.execute("select status, error from housekeeper.runs").fetchall()
    assert ledger[0][0] == "failed"
