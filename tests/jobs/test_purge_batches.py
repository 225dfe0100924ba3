"""The purge batch function: range batches, tie groups, commit mode, elapsed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.support import create_log_table

CUTOFF = datetime(2026, 6, 1, tzinfo=UTC)


def _batch(conn, after, limit, *, cutoff=CUTOFF, table="logs", column="timestamp"):
    return conn.execute(
        "select public.housekeeper_purge_batch('public', %s, %s, %s, %s, %s, false)",
        (table, column, cutoff, after, limit),
    ).fetchone()[0]


def _drain(conn, limit, **kwargs):
    """Call the batch function the way the job does; return each batch's count."""
    counts, after = [], None
    while True:
        result = _batch(conn, after, limit, **kwargs)
        counts.append(result["count"])
        if result["count"] == 0:
            return counts
        after = datetime.fromisoformat(result["last"])
        assert len(counts) < 10_000, "the batches never ended"


def _timestamps(conn, table="logs", column="timestamp"):
    return [
        row[0]
        for row in conn.execute(
            f'select "{column}" from {table} order by 1 nulls first'
        )
    ]


def test_batches_delete_every_expired_row_and_no_other(conn):
    create_log_table(conn)
    conn.execute(
        "insert into logs (\"timestamp\", message) select %s - g * interval '1 minute',"
        " 'old' from generate_series(1, 1000) g",
        (CUTOFF,),
    )
    conn.execute(
        "insert into logs (\"timestamp\", message) values (%s, 'at cutoff'),"
        " (%s, 'just after'), (null, 'no time')",
        (CUTOFF, CUTOFF + timedelta(microseconds=1)),
    )
    conn.execute(
        "insert into logs (\"timestamp\", message) values (%s, 'just before')",
        (CUTOFF - timedelta(microseconds=1),),
    )

    counts = _drain(conn, 64)

    assert sum(counts) == 1001
    assert all(count <= 64 for count in counts)
    assert _timestamps(conn) == [None, CUTOFF, CUTOFF + timedelta(microseconds=1)]


def test_tie_group_larger_than_the_batch_goes_in_limited_batches(conn):
    # A bulk insert gives every row of its transaction the same now().
    create_log_table(conn)
    tied = CUTOFF - timedelta(days=3)
    conn.execute(
        "insert into logs (\"timestamp\", message) select %s, 'tied'"
        " from generate_series(1, 450)",
        (tied,),
    )
    conn.execute(
        "insert into logs (\"timestamp\", message) select %s + g * interval '1 second',"
        " 'after the tie' from generate_series(1, 30) g",
        (tied,),
    )

    counts = _drain(conn, 100)

    assert sum(counts) == 480
    assert max(counts) == 100
    assert conn.execute("select count(*) from logs").fetchone()[0] == 0


def test_ties_across_batch_boundaries_are_all_deleted(conn):
    create_log_table(conn)
    # 1,000 rows on 37 distinct timestamps: every boundary falls inside a tie.
    conn.execute(
        'insert into logs ("timestamp", message) select %s - (g %% 37) *'
        " interval '1 hour', 'tied' from generate_series(1, 1000) g",
        (CUTOFF - timedelta(seconds=1),),
    )

    counts = _drain(conn, 7)

    assert sum(counts) == 1000
    assert all(count <= 7 for count in counts)


def test_naive_timestamp_column_is_purged_in_batches_as_utc(conn):
    create_log_table(conn, column="created_at", column_type="timestamp")
    naive_cutoff = CUTOFF.replace(tzinfo=None)
    conn.execute(
        "insert into logs (created_at, message) select %s - g * interval '1 second',"
        " 'old' from generate_series(1, 300) g",
        (naive_cutoff,),
    )
    conn.execute(
        "insert into logs (created_at, message) values (%s, 'kept')", (naive_cutoff,)
    )

    counts = _drain(conn, 50, column="created_at")

    assert sum(counts) == 300
    assert _timestamps(conn, column="created_at") == [naive_cutoff]


def test_batch_commit_does_not_wait_for_the_wal_flush(pg):
    # Only the purge's own transaction: the setting must not outlive it.
    with psycopg.connect(pg.url) as conn:
        create_log_table(conn)
        conn.commit()
        conn.execute("set synchronous_commit = on")
        conn.commit()
        _batch(conn, None, 10)
        assert conn.execute("show synchronous_commit").fetchone()[0] == "off"
        conn.commit()
        assert conn.execute("show synchronous_commit").fetchone()[0] == "on"


@pytest.mark.usefixtures("clean_ledger")
def test_cleanup_reports_the_purge_elapsed_time(call, conn):
    create_log_table(conn)
    conn.execute(
        "insert into logs (\"timestamp\", message) select now() - interval '40 days',"
        " 'old' from generate_series(1, 50)"
    )

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    database = reply.json["results"]["database"]
    assert database["deleted"] == 50
    assert 0 < database["elapsed_ms"] <= reply.json["duration_ms"]


@pytest.mark.usefixtures("clean_ledger")
def test_a_purge_that_fits_one_batch_makes_one_call(call, conn):
    create_log_table(conn)
    conn.execute(
        "insert into logs (\"timestamp\", message) select now() - interval '40 days',"
        " 'old' from generate_series(1, 10)"
    )
    conn.execute("insert into logs (\"timestamp\", message) values (now(), 'new')")

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    database = reply.json["results"]["database"]
    assert (database["deleted"], database["batches"]) == (10, 1)
    assert [row[0] for row in conn.execute("select message from logs")] == ["new"]


def test_next_batch_is_sized_by_the_slower_of_the_last_two():
    from housekeeper.jobs.purge import _next_limit

    # 50 ms at the slower 5 us a row, not 25,000 rows at the faster 2 us.
    assert _next_limit(10_000, [0.002, 0.005], 50, 50) == 10_000
    assert _next_limit(10_000, [0.005, 0.002], 50, 50) == 10_000
    # At most twice as large, at least half as large, never under the floor.
    assert _next_limit(1_000, [0.001, 0.001], 50, 50) == 2_000
    assert _next_limit(10_000, [0.1, 0.1], 50, 50) == 5_000
    assert _next_limit(60, [1.0], 50, 50) == 50
