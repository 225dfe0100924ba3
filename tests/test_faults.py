"""Database faults: the answer says what happened, the ledger records it where it
can, no row newer than the cutoff is touched, and the next run completes."""

from __future__ import annotations

import pytest

from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres
from tests.support import create_log_table


def _seed(conn, expired: int, fresh: int = 100) -> None:
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days' + g * interval '1 second', 'old'"
        f" from generate_series(1, {expired}) g"
    )
    conn.execute(
        'insert into logs ("timestamp", message)'
        f" select now() - interval '1 day', 'fresh' from generate_series(1, {fresh})"
    )


def _counts(conn) -> tuple[int, int]:
    old = conn.execute("select count(*) from logs where message = 'old'").fetchone()[0]
    fresh = conn.execute(
        "select count(*) from logs where message = 'fresh'"
    ).fetchone()[0]
    return old, fresh


def test_connection_terminated_mid_purge_then_next_run_completes(
    call, conn, clean_ledger
):
    _seed(conn, 5000)
    conn.execute(
        "create or replace function public.kill_once() returns trigger"
        " language plpgsql as $$ begin"
        " if old.id = 4000 then perform pg_terminate_backend(pg_backend_pid()); end if;"
        " return old; end $$"
    )
    conn.execute(
        "create trigger kill_once before delete on logs for each row"
        " execute function public.kill_once()"
    )

    first = call("cleanup_logs", json={"retention_days": 30})

    assert first.status == 503
    assert first.json["error"]["code"] == "database_unavailable"
    done = first.json["results"]["database"]["deleted"]
    assert _counts(conn) == (5000 - done, 100)
    ledger = conn.execute("select status, error from housekeeper.runs").fetchall()
    assert ledger == [("failed", first.json["results"]["database"]["error"])]

    conn.execute("drop trigger kill_once on logs")
    second = call("cleanup_logs", json={"retention_days": 30})
    assert second.status == 200
    assert second.json["results"]["database"]["deleted"] == 5000 - done
    assert _counts(conn) == (0, 100)


def test_statement_timeout_that_batching_cannot_avoid_is_503_with_counts(
    call, conn, pg, set_env, clean_ledger
):
    _seed(conn, 300)
    # Rows from id 150 on cost 200 ms each to delete: past them no batch, however
    # small, fits a 50 ms timeout, so the job must stop and say how far it got.
    conn.execute(
        "create or replace function public.slow_delete() returns trigger"
        " language plpgsql as $$ begin"
        " perform pg_sleep(case when old.id >= 150 then 0.2 else 0.001 end);"
        " return old; end $$"
    )
    conn.execute(
        "create trigger slow_delete before delete on logs for each row"
        " execute function public.slow_delete()"
    )
    conn.execute("drop role if exists slowpoke")
    conn.execute("create role slowpoke login password 'slowpoke-pw-99'")
    conn.execute("grant execute on all functions in schema public to slowpoke")
    conn.execute("grant select, delete on logs to slowpoke")
    conn.execute("alter role slowpoke set statement_timeout = '50ms'")
    set_env(DATABASE_URL=pg.url_for("slowpoke", "slowpoke-pw-99"))

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 503
    assert reply.json["error"]["code"] == "statement_timeout"
    deleted = reply.json["results"]["database"]["deleted"]
    assert deleted == 149
    assert _counts(conn) == (300 - 149, 100)
    status = conn.execute("select status from housekeeper.runs").fetchone()[0]
    assert status == "failed"
    conn.execute("drop trigger slow_delete on logs")


@pytest.fixture
def lone_pg(tmp_path):
    server = LocalPostgres(tmp_path / "lone", fast=True).start()
    apply_migrations(server.url)
    yield server
    server.stop(quiet=True)


def test_database_stopped_is_503_and_the_next_run_after_restart_completes(
    call, lone_pg, set_env
):
    import psycopg

    with psycopg.connect(lone_pg.url, autocommit=True) as lone:
        _seed(lone, 500)
    set_env(DATABASE_URL=lone_pg.url)
    lone_pg.stop()

    down = call("cleanup_logs", json={"retention_days": 30})
    assert down.status == 503
    assert down.json["error"]["code"] == "database_unavailable"
    assert "could not connect" in down.json["error"]["message"]

    lone_pg.start()
    up = call("cleanup_logs", json={"retention_days": 30})
    assert up.status == 200
    assert up.json["results"]["database"]["deleted"] == 500
    with psycopg.connect(lone_pg.url, autocommit=True) as lone:
        assert _counts(lone) == (0, 100)
        runs = lone.execute("select status from housekeeper.runs").fetchall()
    assert runs == [("success",)]
