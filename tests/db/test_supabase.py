"""cleanup-logs over the Supabase transport, end to end through the PostgREST
stand-in on the embedded Postgres: what reaches the SQL, what a wrong key,
missing migrations, a slow statement or a hung server make of a run."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from housekeeper.config import load_settings
from housekeeper.db.base import LOG_PURGE_MIGRATION, RUN_LEDGER_MIGRATION
from housekeeper.db.supabase import SupabaseDatabase
from housekeeper.errors import DatabaseUnavailableError
from housekeeper.jobs import log_cleanup
from tests.support import create_log_table

NOW = datetime(2026, 12, 4, 16, 2, 21, 447_709, tzinfo=UTC)


@pytest.fixture
def over_supabase(set_env, project):
    """Run the targets against the stand-in project only (no DATABASE_URL)."""
    set_env(DATABASE_URL=None, LOG_DIR="", **project.settings_env())
    return project


def _count(conn, table: str = "logs") -> int:
    return conn.execute(f"select count(*) from {table}").fetchone()[0]


def _ledger(conn) -> list[tuple]:
    return conn.execute(
        "select job, trigger, status, counts, error, params->>'transport'"
        " from housekeeper.runs order by started_at"
    ).fetchall()


def test_cutoff_with_microseconds_and_offset_reaches_the_function_exactly(
    call, conn, clean_ledger, over_supabase, monkeypatch
):
    monkeypatch.setattr(log_cleanup, "utc_now", lambda: NOW)
    cutoff = NOW - timedelta(days=30)
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (%s, 'older by 1us'), (%s, 'at cutoff'), (%s, 'newer by 1us')",
        (
            cutoff - timedelta(microseconds=1),
            cutoff,
            cutoff + timedelta(microseconds=1),
        ),
    )

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    assert reply.json["results"]["database"]["cutoff"] == (
        "2026-11-04T16:02:21.447709+00:00"
    )
    assert reply.json["results"]["database"]["deleted"] == 1
    batches = over_supabase.standin.rpc_calls("housekeeper_purge_batch")
    assert batches
    for recorded in batches:
        # Sent as JSON in the body, never in the URL where `+` means a space...
        assert recorded.target == "/rest/v1/rpc/housekeeper_purge_batch"
        sent = json.loads(recorded.body)["p_cutoff"]
        assert sent == "2026-11-04T16:02:21.447709+00:00"
        # ...and typed by Postgres to the very same instant.
        assert recorded.typed_args["p_cutoff"] == "2026-11-04T16:02:21.447709+00:00"
    left = sorted(r[0] for r in conn.execute("select message from logs"))
    assert left == ["at cutoff", "newer by 1us"]


def test_anon_key_as_service_key_is_refused_naming_the_cause_and_touches_nothing(
    call, conn, clean_ledger, over_supabase, set_env
):
    set_env(SUPABASE_SERVICE_ROLE_KEY=over_supabase.anon_key)
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '90 days', 'old' from generate_series(1, 50)"
    )

    reply = call("cleanup_logs")

    assert reply.status == 502
    error = reply.json["error"]
    assert error["code"] == "database_error"
    assert "SUPABASE_SERVICE_ROLE_KEY is not a service_role key" in error["message"]
    assert "permission denied" in error["message"]
    refused = over_supabase.standin.rpc_calls()
    assert [(c.function, c.role, c.status) for c in refused] == [
        ("housekeeper_begin_run", "anon", 403)
    ]
    assert refused[0].response["code"] == "42501"
    assert _count(conn) == 50
    assert _ledger(conn) == []


def test_purge_of_5000_rows_makes_few_calls_with_short_urls(
    call, conn, clean_ledger, over_supabase
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message, context)'
        " select now() - interval '40 days' - i * interval '1 second', 'old',"
        " jsonb_build_object('i', i) from generate_series(1, 5000) i"
    )
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '1 day', 'new' from generate_series(1, 100)"
    )

    reply = call("cleanup_logs")

    assert reply.status == 200, reply.text
    assert reply.json["results"]["database"]["deleted"] == 5000
    assert _count(conn) == 100
    calls = over_supabase.standin.rpc_calls()
    # begin, prepare, a handful of doubling batches and the closing empty one,
    # finish: bounded, whatever the row count within one batch size's reach.
    assert len(calls) <= 12, [c.function for c in calls]
    assert max(len(over_supabase.url + c.target) for c in calls) < 2048
    assert all("?" not in c.target for c in calls)
    # Only counts come back, never rows.
    assert max(len(json.dumps(c.response)) for c in calls) < 1024


def test_missing_ledger_migration_answers_503_naming_the_file(
    call, conn, partial_database, project_on, set_env
):
    partial = project_on(partial_database)
    set_env(DATABASE_URL=None, LOG_DIR="", **partial.settings_env())

    reply = call("cleanup_logs")

    assert reply.status == 503
    error = reply.json["error"]
    assert error["code"] == "migration_missing"
    assert f"apply supabase/migrations/{RUN_LEDGER_MIGRATION}" in error["message"]
    first = partial.standin.rpc_calls()[0]
    assert (first.status, first.response["code"]) == (404, "PGRST202")


def test_deep_health_without_migrations_names_the_first_migration(
    call, bare_database, project_on, set_env
):
    bare = project_on(bare_database)
    set_env(DATABASE_URL=None, **bare.settings_env())

    reply = call("health", method="GET", query={"deep": "1"}, token=None)

    assert reply.status == 503
    database = reply.json["database"]
    assert database["transport"] == "supabase"
    assert database["ok"] is False
    assert f"supabase/migrations/{LOG_PURGE_MIGRATION}" in database["message"]


def test_hung_postgrest_fails_cleanly_within_the_read_timeout(
    call, conn, clean_ledger, over_supabase, set_env
):
    set_env(SUPABASE_READ_TIMEOUT_S="0.5")
    over_supabase.standin.delay_s = 30
    over_supabase.standin.delay_functions = frozenset({"housekeeper_purge_batch"})
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (now() - interval '40 days', 'old')"
    )

    started = time.monotonic()
    reply = call("cleanup_logs")
    elapsed_s = time.monotonic() - started

    assert reply.status == 503
    assert reply.json["error"]["code"] == "database_unavailable"
    assert (
        "did not answer within 0.5 s (SUPABASE_READ_TIMEOUT_S)"
        in (reply.json["error"]["message"])
    )
    assert reply.json["results"]["database"]["status"] == "failed"
    assert elapsed_s < 3
    [(job, _, status, _, error, transport)] = _ledger(conn)
    assert (job, status, transport) == ("cleanup-logs", "failed", "supabase")
    assert "SUPABASE_READ_TIMEOUT_S" in error


def test_hung_postgrest_on_a_direct_call_raises_within_the_read_timeout(project):
    project.standin.delay_s = 30
    settings = load_settings(project.settings_env(SUPABASE_READ_TIMEOUT_S="0.3"))
    started = time.monotonic()
    with SupabaseDatabase(settings) as db, pytest.raises(DatabaseUnavailableError):
        db.run_summary()
    assert time.monotonic() - started < 2


def test_role_statement_timeout_makes_the_purge_shrink_its_batches(
    call, conn, clean_ledger, over_supabase
):
    # Each deleted row costs 2 ms, and service_role may run 300 ms per
    # statement, as PostgREST applies a role's own settings: a first batch of
    # hundreds of rows must time out, and the purge must shrink until it fits.
    create_log_table(conn)
    conn.execute(
        "create function public.slow_delete() returns trigger language plpgsql"
        " as $$ begin perform pg_sleep(0.002); return old; end $$"
    )
    conn.execute(
        "create trigger slow before delete on logs"
        " for each row execute function public.slow_delete()"
    )
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days' - i * interval '1 second', 'old'"
        " from generate_series(1, 300) i"
    )
    conn.execute("alter role service_role set statement_timeout = '300ms'")
    try:
        reply = call("cleanup_logs")
    finally:
        conn.execute("alter role service_role reset statement_timeout")
        conn.execute("drop function public.slow_delete() cascade")

    assert reply.status == 200, reply.text
    assert reply.json["results"]["database"]["deleted"] == 300
    batches = over_supabase.standin.rpc_calls("housekeeper_purge_batch")
    timed_out = [c for c in batches if c.status != 200]
    assert timed_out
    assert {c.response["code"] for c in timed_out} == {"57014"}
    assert {c.status for c in timed_out} == {500}
    limits = [json.loads(c.body)["p_limit"] for c in batches]
    assert limits[1] < limits[0]
    assert _count(conn) == 0
