"""Both transports, one scenario: the same table, retention and request must
give the same answer, the same ledger and the same rows left; and the health
check names the transport in use, direct Postgres winning when both are set."""

from __future__ import annotations

import subprocess
import sys

from devstack.emulator import FUNCTIONS_DIR
from tests.support import create_log_table


def _seed(conn) -> None:
    # Half a day away from every day boundary, so that the few seconds between
    # the two runs cannot move a row across the cutoff.
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message, context)'
        " select now() - make_interval(days => d % 90, hours => 12),"
        "        'row ' || d, jsonb_build_object('d', d)"
        " from generate_series(0, 899) d"
    )
    conn.execute(
        "insert into logs (\"timestamp\", message) select null, 'no time'"
        " from generate_series(1, 5)"
    )


def _outcome(conn, reply) -> dict:
    body = reply.json
    database = body["results"]["database"]
    ledger = conn.execute(
        "select job, trigger, status, counts, error from housekeeper.runs"
        " where run_id = %s",
        (body["run_id"],),
    ).fetchall()
    return {
        "http": reply.status,
        "status": body["status"],
        "message": body["message"],
        "database": {k: database[k] for k in ("table", "deleted", "status")},
        "ledger": ledger,
        "rows_left": [r[0] for r in conn.execute("select id from logs order by id")],
    }


def test_cleanup_logs_gives_the_same_result_over_both_transports(
    call, conn, clean_ledger, set_env, project
):
    request = {"retention_days": 30, "trigger": "manual"}

    _seed(conn)
    direct = call("cleanup_logs", json=request)
    over_postgres = _outcome(conn, direct)

    _seed(conn)
    set_env(DATABASE_URL=None, **project.settings_env())
    supabase = call("cleanup_logs", json=request)
    over_supabase = _outcome(conn, supabase)

    assert over_postgres["http"] == 200, direct.text
    assert over_postgres["database"]["deleted"] == 600
    assert len(over_postgres["rows_left"]) == 305
    assert over_supabase == over_postgres
    transports = conn.execute(
        "select params->>'transport' from housekeeper.runs order by started_at"
    ).fetchall()
    assert transports == [("postgres",), ("supabase",)]
    assert project.standin.rpc_calls("housekeeper_purge_batch")


def test_deep_health_names_the_supabase_transport(call, set_env, project):
    set_env(DATABASE_URL=None, **project.settings_env())

    reply = call("health", method="GET", query={"deep": "1"}, token=None)

    assert reply.status == 200, reply.text
    assert reply.json["transport"] == "supabase"
    assert reply.json["database"]["transport"] == "supabase"
    assert reply.json["database"]["ok"] is True
    called = [c.function for c in project.standin.rpc_calls()]
    assert called == ["housekeeper_missing_functions", "housekeeper_run_summary"]


def test_database_url_wins_when_both_transports_are_configured(call, set_env, project):
    set_env(**project.settings_env())

    shallow = call("health", method="GET", token=None)
    deep = call("health", method="GET", query={"deep": "1"}, token=None)

    assert shallow.json["transport"] == "postgres"
    assert deep.status == 200, deep.text
    assert deep.json["database"]["transport"] == "postgres"
    assert project.standin.rpc_calls() == []


def test_health_cold_start_imports_neither_supabase_nor_httpx():
    script = (
        "import sys, main, flask\n"
        "with flask.Flask('t').test_request_context('/'):\n"
        "    assert main.health(flask.request).status_code == 200\n"
        "loaded = {'supabase', 'postgrest', 'httpx', 'housekeeper.db.supabase'}\n"
        "print(sorted(loaded & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=FUNCTIONS_DIR,
        env={"CRON_SECRET": "x" * 16, "PATH": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
