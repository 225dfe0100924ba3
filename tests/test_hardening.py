"""Defects found by breaking the product, each kept fixed by a test."""

from __future__ import annotations

import psycopg
import pytest
import requests

from tests.support import TEST_SECRET, create_log_table


@pytest.fixture
def table(conn, clean_ledger):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days', 'old' from generate_series(1, 5)"
    )


def _untouched(conn):
    assert conn.execute("select count(*) from logs").fetchone()[0] == 5


def test_repeated_json_key_with_different_values_is_400_never_a_purge(
    call, conn, table
):
    reply = call(
        "cleanup_logs",
        data=b'{"retention_days": 7, "dry_run": true, "dry_run": false}',
    )
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "dry_run"
    _untouched(conn)


def test_lone_surrogate_key_is_a_json_400_not_a_crash(call, conn, table):
    reply = call("cleanup_logs", data=b'{"\\ud800": 1}')
    assert reply.status == 400
    assert reply.headers["Content-Type"].startswith("application/json")
    _untouched(conn)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retention_days", "9" * 5000),
        ("skip_if_succeeded_within", "9" * 5000 + "h"),
        ("retention_days", "\u0663\u0660"),
        ("time_budget_s", "1" * 400),
    ],
)
def test_absurd_numbers_are_400_not_500(call, conn, table, name, value):
    reply = call("cleanup_logs", query={name: value})
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == name
    _untouched(conn)


def test_secret_with_trailing_newline_from_a_secret_store_still_matches(
    call, set_env, table
):
    set_env(CRON_SECRET=TEST_SECRET + "\n")
    reply = call("cleanup_logs", json={"dry_run": True})
    assert reply.status == 200


def test_whitespace_only_secret_counts_as_not_configured(call, set_env):
    set_env(CRON_SECRET="   ")
    assert call("cleanup_logs", json={"dry_run": True}).status == 500
    health = call("health", method="GET", token=None)
    assert health.json["cron_secret_configured"] is False


def test_utf8_secret_sent_as_utf8_over_the_wire_matches(emulator, conn, table):
    emu = emulator("cleanup_logs", CRON_SECRET="s3crét-pass")
    response = requests.post(
        emu.url,
        headers={"Authorization": "Bearer s3crét-pass".encode()},
        json={"dry_run": True},
        timeout=30,
    )
    assert response.status_code == 200


def test_unencoded_password_in_database_url_is_refused_without_echoing_it(
    call, monkeypatch, request
):
    request.node.extra_secrets = ("Xy7@SuperSecretTail99", "SuperSecretTail99")
    monkeypatch.setenv(
        "DATABASE_URL", "postgresql://hk:Xy7@SuperSecretTail99@127.0.0.1:1/postgres"
    )
    reply = call("cleanup_logs", json={"dry_run": True})
    assert reply.status == 500
    assert reply.json["error"]["code"] == "configuration_error"
    assert "percent-encode" in reply.json["error"]["message"]


def test_deep_health_names_the_failure_without_its_details(call, set_env):
    set_env(DATABASE_URL="postgresql://nobody@127.0.0.1:1/postgres")
    reply = call("health", method="GET", query={"deep": "1"}, token=None)
    assert reply.status == 503
    assert reply.json["database"]["error"] == "database_unavailable"
    assert "127.0.0.1" not in reply.text


def test_configuration_error_during_a_run_is_recorded_with_its_message(
    call, conn, set_env, clean_ledger
):
    conn.execute("drop table if exists public.no_such_logs")
    set_env(LOGS_TABLE="no_such_logs")
    reply = call("cleanup_logs", json={"retention_days": 30})
    assert reply.status == 500
    status, error = conn.execute(
        "select status, error from housekeeper.runs"
    ).fetchone()
    assert status == "failed"
    assert "no_such_logs" in error


@pytest.mark.parametrize("granted", ["", "select", "update"])
def test_media_functions_refuse_a_table_the_caller_may_not_update(conn, granted):
    conn.execute("drop table if exists public.private_urls")
    conn.execute("create table public.private_urls (id int primary key, url text)")
    conn.execute("revoke all on public.private_urls from service_role")
    if granted:
        conn.execute(f"grant {granted} on public.private_urls to service_role")
    conn.execute(
        "insert into public.private_urls values (1, 'https://x.cdninstagram.com/a.jpg')"
    )
    with conn.transaction():
        conn.execute("set local role service_role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="private_urls"):
            conn.execute(
                "select public.housekeeper_media_claim('p', 'public', 'private_urls',"
                " 'id', 'url', 'image', array['cdninstagram.com'], null,"
                " gen_random_uuid(), 10, 60)"
            )
    conn.execute("drop table public.private_urls")


@pytest.mark.parametrize("schema", ["pg_catalog", "housekeeper", "information_schema"])
def test_media_functions_never_touch_catalogs_or_their_own_state(conn, schema):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "select public.housekeeper_media_claim('p', %s, 'runs',"
            " 'run_id', 'error', 'image', array['cdninstagram.com'], null,"
            " gen_random_uuid(), 10, 60)",
            (schema,),
        )


@pytest.mark.parametrize("dry_run", [False, True])
def test_minus_infinity_and_bc_timestamps_are_purged_and_counted(
    call, conn, clean_ledger, dry_run
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " ('-infinity', 'a'), ('0044-03-15 00:00:00+00 BC', 'b'),"
        " (now() - interval '40 days', 'c'), (now(), 'keep'), ('infinity', 'keep')"
    )
    reply = call("cleanup_logs", json={"retention_days": 30, "dry_run": dry_run})
    assert reply.status == 200, reply.text
    database = reply.json["results"]["database"]
    assert database["would_delete" if dry_run else "deleted"] == 3
    left = sorted(r[0] for r in conn.execute("select message from logs"))
    assert left == (["a", "b", "c", "keep", "keep"] if dry_run else ["keep", "keep"])


def test_missing_table_still_sweeps_the_folder_then_fails(
    call, conn, set_env, env, clean_ledger
):
    import os
    import time
    from pathlib import Path

    old = Path(env["LOG_DIR"]) / "old.log"
    old.write_text("x")
    stamp = time.time() - 40 * 86400
    os.utime(old, (stamp, stamp))
    conn.execute("drop table if exists public.gone_logs")
    set_env(LOGS_TABLE="gone_logs")
    reply = call("cleanup_logs", json={"retention_days": 30})
    assert reply.status == 500
    assert reply.json["error"]["code"] == "configuration_error"
    assert not old.exists()


def test_purge_deletes_nothing_the_caller_may_not_delete(conn):
    conn.execute("drop table if exists public.victim")
    conn.execute("create table public.victim (id int, ts timestamptz)")
    conn.execute("revoke all on public.victim from service_role")
    conn.execute("insert into public.victim values (1, '2020-01-01')")
    with conn.transaction():
        conn.execute("set local role service_role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "select public.housekeeper_purge_batch('public', 'victim', 'ts',"
                " now() - interval '30 days', null, 100, false)"
            )
    assert conn.execute("select count(*) from public.victim").fetchone()[0] == 1
    conn.execute("drop table public.victim")


@pytest.mark.parametrize(
    ("schema", "table", "column"),
    [
        ("housekeeper", "runs", "started_at"),
        ("pg_catalog", "pg_authid", "rolvaliduntil"),
    ],
)
def test_purge_refuses_catalogs_and_its_own_ledger_even_for_the_owner(
    conn, schema, table, column
):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "select public.housekeeper_purge_batch(%s, %s, %s,"
            " now() - interval '30 days', null, 100, false)",
            (schema, table, column),
        )


def test_purge_refuses_a_cutoff_less_than_a_day_old(conn):
    create_log_table(conn)
    conn.execute("insert into logs (\"timestamp\") values (now() - interval '1 hour')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="one day"):
        conn.execute(
            "select public.housekeeper_purge_batch('public', 'logs', 'timestamp',"
            " now() + interval '100 years', null, 100, false)"
        )
    assert conn.execute("select count(*) from logs").fetchone()[0] == 1


def test_a_locked_table_stops_the_purge_with_partial_instead_of_waiting(
    call, conn, pg, table
):
    import time

    with psycopg.connect(pg.url) as holder:
        holder.execute("lock table public.logs in access exclusive mode")
        started = time.monotonic()
        reply = call("cleanup_logs", json={"retention_days": 30})
        waited_s = time.monotonic() - started
        holder.rollback()
    assert reply.status == 200, reply.text
    assert reply.json["status"] == "partial"
    assert "locked by another session" in reply.json["results"]["database"]["warning"]
    assert waited_s < 10
    _untouched(conn)


def _ledger_row(conn, job: str, status: str, hours_ago: float) -> None:
    conn.execute(
        "insert into housekeeper.runs (run_id, job, trigger, status, started_at,"
        " finished_at, lease_expires_at) values (gen_random_uuid(), %s, 'scheduler',"
        " %s, now() - make_interval(secs => %s), now() - make_interval(secs => %s),"
        " now())",
        (job, status, hours_ago * 3600 + 5, hours_ago * 3600),
    )


@pytest.mark.parametrize(
    ("status", "hours_ago", "overdue"),
    [
        ("success", 2, False),
        ("partial", 2, False),
        ("success", 30, True),
        ("failed", 2, True),
        ("dry_run", 2, True),
    ],
)
def test_deep_health_calls_a_job_overdue_without_recent_progress(
    call, conn, clean_ledger, status, hours_ago, overdue
):
    _ledger_row(conn, "cleanup-logs", status, hours_ago)
    reply = call("health", method="GET", query={"deep": "1"}, token=None)
    assert reply.status == 200
    job = reply.json["jobs"]["cleanup-logs"]
    assert job["overdue"] is overdue
    assert job["overdue_after_h"] == 26
    assert reply.json["jobs"]["migrate-cdn-to-r2"]["overdue"] is True
