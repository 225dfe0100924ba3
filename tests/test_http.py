"""Parameters: query string and JSON body of any Content-Type; a bad one is a 400
before any query runs."""

from __future__ import annotations

import json

import pytest

from tests.support import create_log_table


@pytest.fixture
def table(conn, clean_ledger):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days', 'old' from generate_series(1, 5)"
    )


def _untouched(conn):
    assert conn.execute("select count(*) from logs").fetchone()[0] == 5
    assert conn.execute("select count(*) from housekeeper.runs").fetchone()[0] == 0


@pytest.mark.parametrize("value", ["0", "-1", "abc", "30.5", "1e9", "", "3651", " "])
def test_invalid_retention_days_in_query_is_400_and_table_untouched(
    call, conn, table, value
):
    reply = call("cleanup_logs", query={"retention_days": value})
    assert reply.status == 400
    assert reply.json["error"]["code"] == "invalid_parameter"
    assert reply.json["error"]["parameter"] == "retention_days"
    assert "retention_days" in reply.json["error"]["message"]
    _untouched(conn)


@pytest.mark.parametrize("value", [0, -1, "abc", 30.5, 1e9, "", None, True, [30]])
def test_invalid_retention_days_in_body_is_400_and_table_untouched(
    call, conn, table, value
):
    reply = call("cleanup_logs", json={"retention_days": value})
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "retention_days"
    _untouched(conn)


def test_body_is_read_whatever_its_content_type(call, conn, table):
    reply = call(
        "cleanup_logs",
        data=json.dumps({"retention_days": 30, "dry_run": True}),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert reply.status == 200
    assert reply.json["status"] == "dry_run"
    assert reply.json["results"]["database"]["would_delete"] == 5


def test_same_value_in_query_and_body_is_fine(call, conn, table):
    reply = call("cleanup_logs", query={"dry_run": "true"}, json={"dry_run": True})
    assert reply.status == 200


def test_conflicting_values_in_query_and_body_are_400(call, conn, table):
    reply = call(
        "cleanup_logs", query={"retention_days": "30"}, json={"retention_days": 7}
    )
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "retention_days"
    _untouched(conn)


def test_repeated_query_key_with_different_values_is_400(call, conn, table):
    reply = call("cleanup_logs", query="retention_days=30&retention_days=7")
    assert reply.status == 400
    _untouched(conn)


def test_unknown_parameter_is_400(call, conn, table):
    reply = call("cleanup_logs", json={"dry_rnu": True})
    assert reply.status == 400
    assert reply.json["error"] == {
        "code": "invalid_parameter",
        "message": "unknown parameter 'dry_rnu'",
        "parameter": "dry_rnu",
    }
    _untouched(conn)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"'])
def test_body_that_is_not_a_json_object_is_400(call, conn, table, body):
    reply = call("cleanup_logs", data=body)
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "body"
    _untouched(conn)


@pytest.mark.parametrize("value", ["maybe", "2"])
def test_invalid_dry_run_is_400(call, conn, table, value):
    reply = call("cleanup_logs", query={"dry_run": value})
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "dry_run"
    _untouched(conn)


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "100000"])
def test_invalid_time_budget_is_400(call, conn, table, value):
    reply = call("cleanup_logs", query={"time_budget_s": value})
    assert reply.status == 400
    assert reply.json["error"]["parameter"] == "time_budget_s"
    _untouched(conn)


def test_get_on_a_job_is_405_with_allow(call, conn, table):
    reply = call("cleanup_logs", method="GET")
    assert reply.status == 405
    assert reply.headers["Allow"] == "POST"
    assert reply.json["error"]["code"] == "method_not_allowed"


def test_post_on_health_is_405_with_allow(call):
    reply = call("health", method="POST", token=None)
    assert reply.status == 405
    assert reply.headers["Allow"] == "GET, HEAD"


def test_success_body_has_every_contract_field(call, conn, table):
    reply = call("cleanup_logs", json={"retention_days": 30})
    assert reply.status == 200
    body = reply.json
    for key in (
        "status",
        "job",
        "run_id",
        "message",
        "results",
        "started_at",
        "finished_at",
        "duration_ms",
    ):
        assert key in body
    assert body["job"] == "cleanup-logs"
    assert body["started_at"].endswith("+00:00")
    assert body["finished_at"].endswith("+00:00")
    assert set(body["results"]["database"]) >= {
        "deleted",
        "cutoff",
        "batches",
        "status",
    }
    assert set(body["results"]["files"]) >= {
        "deleted_files",
        "deleted_bytes",
        "skipped",
        "errors",
        "status",
    }
    assert body["results"]["database"]["deleted"] == 5
