"""Property: the purge deletes exactly the rows strictly older than the cutoff."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from housekeeper.db.postgres import PostgresDatabase
from tests.support import create_log_table

CUTOFF = datetime(2026, 3, 1, 0, 0, 0, 500_000, tzinfo=UTC)
_OFFSETS_US = st.one_of(
    st.integers(-3, 3),
    st.integers(-2_000_000, 2_000_000),
    st.integers(-90 * 86400 * 10**6, 90 * 86400 * 10**6),
)
_ROWS = st.lists(st.one_of(st.none(), _OFFSETS_US), min_size=0, max_size=60)
_ZONES = st.sampled_from(
    ["UTC", "Asia/Tokyo", "America/St_Johns", "Pacific/Kiritimati", "Etc/GMT+12"]
)
_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture
def db(pg):
    database = PostgresDatabase(pg.url)
    yield database
    database.close()


@_SETTINGS
@given(
    offsets=_ROWS,
    naive=st.booleans(),
    limit=st.integers(1, 7),
    dry_run=st.booleans(),
    zone=_ZONES,
)
def test_batched_purge_deletes_exactly_rows_strictly_older_than_cutoff(
    db, conn, offsets, naive, limit, dry_run, zone
):
    create_log_table(conn, column_type="timestamp" if naive else "timestamptz")
    conn.execute(f"alter database postgres set timezone = '{zone}'")
    stamps = [
        None if offset is None else CUTOFF + timedelta(microseconds=offset)
        for offset in offsets
    ]
    values = [
        (None if s is None else (s.replace(tzinfo=None) if naive else s), str(i))
        for i, s in enumerate(stamps)
    ]
    with conn.cursor() as cursor:
        cursor.executemany(
            'insert into logs ("timestamp", message) values (%s, %s)', values
        )
    expected_gone = {
        str(i) for i, s in enumerate(stamps) if s is not None and s < CUTOFF
    }

    try:
        db.close()
        target = db.purge_prepare("public", "logs", "timestamp")
        counted, after = 0, None
        for _ in range(len(values) + 2):
            batch = db.purge_batch(target, CUTOFF, after, limit, dry_run=dry_run)
            counted += batch.count
            if batch.count == 0 or (dry_run and batch.count < limit):
                break
            after = batch.last
    finally:
        conn.execute("alter database postgres reset timezone")

    left = {row[0] for row in conn.execute("select message from logs")}
    assert counted == len(expected_gone)
    if dry_run:
        assert left == {str(i) for i in range(len(values))}
    else:
        assert left == {str(i) for i in range(len(values))} - expected_gone


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    retention_days=st.integers(1, 3650),
    zone=_ZONES,
    offsets_s=st.lists(st.integers(-5, 5), min_size=1, max_size=12),
)
def test_job_cutoff_is_utc_now_minus_retention_in_any_process_zone(
    call, conn, monkeypatch, retention_days, zone, offsets_s
):
    create_log_table(conn)
    conn.execute("truncate housekeeper.runs")
    now = datetime.now(UTC)
    boundary = now - timedelta(days=retention_days)
    with conn.cursor() as cursor:
        cursor.executemany(
            'insert into logs ("timestamp", message) values (%s, %s)',
            [(boundary + timedelta(seconds=o), str(o)) for o in offsets_s],
        )
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        reply = call("cleanup_logs", json={"retention_days": retention_days})
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()

    assert reply.status == 200, reply.text
    cutoff = datetime.fromisoformat(reply.json["results"]["database"]["cutoff"])
    assert abs(
        cutoff - (datetime.now(UTC) - timedelta(days=retention_days))
    ) < timedelta(seconds=30)
    left = sorted(r[0] for r in conn.execute('select "timestamp" from logs'))
    assert all(stamp >= cutoff for stamp in left)
    assert reply.json["results"]["database"]["deleted"] == len(offsets_s) - len(left)
