"""The stack the other tests build on: database, targets, emulator."""

from __future__ import annotations

import requests

from tests.support import TEST_SECRET, create_log_table


def test_health_answers_without_auth(call):
    reply = call("health", method="GET", token=None)
    assert reply.status == 200
    assert reply.json["status"] == "healthy"
    assert reply.json["cron_secret_configured"] is True
    assert "cleanup-logs" in reply.json["available_jobs"]


def test_cleanup_runs_in_process(call, conn, clean_ledger):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (now() - interval '40 days', 'old'), (now() - interval '1 day', 'new')"
    )
    reply = call("cleanup_logs", json={"retention_days": 30})
    assert reply.status == 200, reply.text
    assert reply.json["results"]["database"]["deleted"] == 1
    assert [r[0] for r in conn.execute("select message from logs")] == ["new"]


def test_cleanup_runs_in_the_emulator(emulator, conn, clean_ledger):
    create_log_table(conn)
    emu = emulator("cleanup_logs")
    response = requests.post(
        emu.url, headers={"Authorization": f"Bearer {TEST_SECRET}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
