"""The Supabase transport at the wire (respx): paths, headers, bodies, and how
each PostgREST answer becomes an error of the tree or a job result."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
import respx

from housekeeper.config import load_settings
from housekeeper.db.base import (
    LOG_PURGE_MIGRATION,
    RUN_LEDGER_MIGRATION,
    PurgeTarget,
)
from housekeeper.db.supabase import OPERATIONAL_CLASSES, SupabaseDatabase
from housekeeper.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    MigrationMissingError,
    StatementTimeoutError,
)
from tests.support import Leaks

BASE = "https://hk-test.supabase.co"
RPC = f"{BASE}/rest/v1/rpc/"
# Shaped like a real service-role key, and checked against every log line.
KEY = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0"
    ".wire-test-signature_Zq8+x"
)
TARGET = PurgeTarget("public", "logs", "timestamp", True, True, 8000.0)
CUTOFF = datetime(2026, 11, 4, 16, 2, 21, 447_709, tzinfo=UTC)


@pytest.fixture
def no_key_leak(leak_guard: Leaks) -> Iterator[None]:
    yield
    leak_guard.check((KEY,))


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def _db(**env: str) -> SupabaseDatabase:
    values = {"SUPABASE_URL": BASE, "SUPABASE_SERVICE_ROLE_KEY": KEY, **env}
    return SupabaseDatabase(load_settings(values))


def _answer(mock: respx.MockRouter, function: str, response: Any) -> respx.Route:
    route = mock.post(RPC + function)
    if isinstance(response, Exception):
        return route.mock(side_effect=response)
    return route.mock(return_value=response)


def test_rpc_is_a_post_with_both_key_headers_and_a_json_body(mock, no_key_leak):
    route = _answer(
        mock,
        "housekeeper_purge_batch",
        httpx.Response(200, json={"count": 3, "last": None, "elapsed_ms": 1.5}),
    )
    with _db() as db:
        batch = db.purge_batch(TARGET, CUTOFF, None, 500, dry_run=False)

    assert (batch.count, batch.elapsed_ms) == (3, 1.5)
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == RPC + "housekeeper_purge_batch"
    assert request.url.query == b""
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "p_schema": "public",
        "p_table": "logs",
        "p_column": "timestamp",
        "p_cutoff": "2026-11-04T16:02:21.447709+00:00",
        "p_after": None,
        "p_limit": 500,
        "p_dry_run": False,
    }


def test_a_supabase_url_with_a_trailing_slash_gives_the_same_path(mock):
    route = _answer(mock, "housekeeper_run_summary", httpx.Response(200, json={}))
    with _db(SUPABASE_URL=BASE + "/") as db:
        assert db.run_summary() == {}
    assert str(route.calls.last.request.url) == RPC + "housekeeper_run_summary"
    assert json.loads(route.calls.last.request.content) == {}


def test_begin_run_sends_params_as_an_object_and_whole_seconds_with_microseconds(
    mock,
):
    route = _answer(
        mock,
        "housekeeper_begin_run",
        httpx.Response(200, json={"outcome": "started", "run": {}, "abandoned": []}),
    )
    with _db() as db:
        db.begin_run(
            job="cleanup-logs",
            run_id="7d3c5a52-3f4e-4c1e-9a51-1c2b3d4e5f60",
            trigger="scheduler",
            scheduler_job="nightly",
            schedule_time=datetime(2026, 12, 1, 3, 0, tzinfo=UTC),
            lease_s=660,
            skip_within_s=None,
            params={"transport": "supabase", "retention_days": 30},
        )
    body = json.loads(route.calls.last.request.content)
    assert body["p_schedule_time"] == "2026-12-01T03:00:00.000000+00:00"
    assert body["p_params"] == {"transport": "supabase", "retention_days": 30}
    assert body["p_skip_within_s"] is None


def test_a_datetime_in_another_zone_travels_as_the_same_instant_in_utc(mock):
    route = _answer(
        mock, "housekeeper_purge_estimate", httpx.Response(200, json={"estimate": 0})
    )
    india = timezone(timedelta(hours=5, minutes=30))
    with _db() as db:
        db.purge_estimate(TARGET, datetime(2026, 1, 1, 5, 30, 0, 1, tzinfo=india))
    body = json.loads(route.calls.last.request.content)
    assert body["p_cutoff"] == "2026-01-01T00:00:00.000001+00:00"


def test_a_naive_datetime_is_refused_before_anything_is_sent(mock):
    route = _answer(
        mock, "housekeeper_purge_estimate", httpx.Response(200, json={"estimate": 0})
    )
    with _db() as db, pytest.raises(ValueError, match="naive datetime"):
        db.purge_estimate(TARGET, datetime(2026, 1, 1))
    assert not route.called


def test_connect_and_read_timeouts_come_from_the_settings(mock):
    route = _answer(mock, "housekeeper_run_summary", httpx.Response(200, json={}))
    with _db(SUPABASE_CONNECT_TIMEOUT_S="1.5", SUPABASE_READ_TIMEOUT_S="7") as db:
        db.run_summary()
    timeouts = route.calls.last.request.extensions["timeout"]
    assert timeouts == {"connect": 1.5, "read": 7.0, "write": 7.0, "pool": 1.5}


def test_a_failed_post_is_not_retried(mock):
    route = _answer(
        mock,
        "housekeeper_purge_batch",
        httpx.Response(503, json={"code": "PGRST000", "message": "no connection"}),
    )
    with _db() as db, pytest.raises(DatabaseUnavailableError):
        db.purge_batch(TARGET, CUTOFF, None, 10, dry_run=False)
    assert route.call_count == 1


def _pgrst(status: int, code: str | None, message: str, **extra: Any) -> httpx.Response:
    body: dict[str, Any] = {"message": message, "details": None, "hint": None}
    if code is not None:
        body["code"] = code
    return httpx.Response(status, json={**body, **extra})


ERROR_CASES = [
    pytest.param(
        _pgrst(
            404,
            "PGRST202",
            "Could not find the function public.housekeeper_purge_batch"
            "(p_after, p_column) in the schema cache",
        ),
        MigrationMissingError,
        503,
        f"apply supabase/migrations/{LOG_PURGE_MIGRATION}",
        id="PGRST202-missing-function",
    ),
    pytest.param(
        _pgrst(
            404, "42883", "function public.housekeeper_purge_batch(...) does not exist"
        ),
        MigrationMissingError,
        503,
        f"apply supabase/migrations/{LOG_PURGE_MIGRATION}",
        id="42883-undefined-function",
    ),
    pytest.param(
        _pgrst(500, "57014", "canceling statement due to statement timeout"),
        StatementTimeoutError,
        503,
        "canceling statement due to statement timeout",
        id="57014-statement-timeout",
    ),
    pytest.param(
        _pgrst(403, "42501", "permission denied for function housekeeper_purge_batch"),
        DatabaseError,
        502,
        "SUPABASE_SERVICE_ROLE_KEY is not a service_role key",
        id="42501-anon-key",
    ),
    pytest.param(
        _pgrst(403, "42501", "permission denied for table logs"),
        DatabaseError,
        502,
        "permission denied for table logs (HTTP 403, 42501); the role that applied",
        id="42501-owner-lacks-privilege",
    ),
    pytest.param(
        httpx.Response(
            401,
            json={
                "message": "Invalid API key",
                "hint": "Double check your Supabase `anon` or `service_role` API key.",
            },
        ),
        DatabaseError,
        502,
        "SUPABASE_SERVICE_ROLE_KEY is not a service_role key",
        id="401-gateway-invalid-key",
    ),
    pytest.param(
        _pgrst(401, "PGRST301", "JWSError JWSInvalidSignature"),
        DatabaseError,
        502,
        "HTTP 401: JWSError JWSInvalidSignature",
        id="PGRST301-bad-jwt",
    ),
    pytest.param(
        _pgrst(404, "42P01", "table public.nope does not exist"),
        ConfigurationError,
        500,
        "table public.nope does not exist",
        id="42P01-missing-table",
    ),
    pytest.param(
        _pgrst(400, "42703", "column created does not exist in logs"),
        ConfigurationError,
        500,
        "column created does not exist in logs",
        id="42703-missing-column",
    ),
    pytest.param(
        _pgrst(503, "PGRST000", "Could not connect with the database"),
        DatabaseUnavailableError,
        503,
        "Could not connect with the database",
        id="PGRST000-no-database",
    ),
    pytest.param(
        httpx.Response(
            502, text="<html>Bad Gateway</html>", headers={"content-type": "text/html"}
        ),
        DatabaseUnavailableError,
        503,
        "HTTP 502",
        id="502-html-from-a-proxy",
    ),
    pytest.param(
        httpx.Response(504),
        DatabaseUnavailableError,
        503,
        "HTTP 504",
        id="504-empty",
    ),
    pytest.param(
        _pgrst(500, "40P01", "deadlock detected"),
        DatabaseUnavailableError,
        503,
        "deadlock detected",
        id="40P01-deadlock-like-psycopg",
    ),
    pytest.param(
        _pgrst(500, "XX000", "internal error"),
        DatabaseError,
        502,
        "internal error (HTTP 500, XX000)",
        id="XX000-internal",
    ),
    pytest.param(
        _pgrst(400, "22023", "p_limit must be between 1 and 100000"),
        DatabaseError,
        502,
        "p_limit must be between 1 and 100000",
        id="22023-invalid-parameter",
    ),
    pytest.param(
        httpx.Response(
            200, text="<html>dashboard</html>", headers={"content-type": "text/html"}
        ),
        DatabaseError,
        502,
        "answered text/html instead of JSON",
        id="200-html-wrong-url",
    ),
    pytest.param(
        httpx.Response(301, headers={"location": "https://elsewhere.example/"}),
        DatabaseError,
        502,
        "HTTP 301",
        id="301-redirect-not-followed",
    ),
    pytest.param(
        httpx.ConnectError("[Errno 111] Connection refused"),
        DatabaseUnavailableError,
        503,
        "could not reach Supabase: [Errno 111] Connection refused",
        id="connection-refused",
    ),
    pytest.param(
        httpx.ConnectTimeout("timed out"),
        DatabaseUnavailableError,
        503,
        "within 5 s (SUPABASE_CONNECT_TIMEOUT_S)",
        id="connect-timeout",
    ),
    pytest.param(
        httpx.ReadTimeout("timed out"),
        DatabaseUnavailableError,
        503,
        "did not answer within 30 s (SUPABASE_READ_TIMEOUT_S)",
        id="read-timeout",
    ),
]


@pytest.mark.parametrize(("response", "error", "status", "message"), ERROR_CASES)
def test_postgrest_answers_map_onto_the_error_tree(
    mock, no_key_leak, response, error, status, message
):
    _answer(mock, "housekeeper_purge_batch", response)
    with _db() as db, pytest.raises(error) as caught:
        db.purge_batch(TARGET, CUTOFF, None, 10, dry_run=False)
    assert type(caught.value) is error
    assert caught.value.status == status
    assert message in caught.value.message
    assert KEY not in caught.value.message


def test_a_proxy_that_echoes_the_key_does_not_put_it_in_the_message(mock):
    _answer(mock, "housekeeper_run_summary", _pgrst(401, None, f"bad key {KEY}"))
    with _db() as db, pytest.raises(DatabaseError) as caught:
        db.run_summary()
    assert KEY not in caught.value.message
    assert "bad key [redacted]" in caught.value.message


def test_a_missing_ledger_function_names_the_ledger_migration(mock):
    _answer(mock, "housekeeper_begin_run", _pgrst(404, "PGRST202", "not found"))
    with _db() as db, pytest.raises(MigrationMissingError) as caught:
        db.begin_run(
            job="j",
            run_id="7d3c5a52-3f4e-4c1e-9a51-1c2b3d4e5f60",
            trigger="manual",
            scheduler_job=None,
            schedule_time=None,
            lease_s=60,
            skip_within_s=None,
            params={},
        )
    assert RUN_LEDGER_MIGRATION in caught.value.message
    assert caught.value.details == {
        "function": "housekeeper_begin_run",
        "migration": RUN_LEDGER_MIGRATION,
    }


def test_an_unusable_supabase_url_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="SUPABASE_URL is not usable"):
        _db(SUPABASE_URL="hk-test.supabase.co")


@pytest.mark.parametrize("sqlstate_class", OPERATIONAL_CLASSES)
def test_operational_classes_are_those_psycopg_calls_operational(sqlstate_class):
    # The direct transport maps psycopg.OperationalError to "unavailable"; the
    # Supabase transport must classify the same SQLSTATEs the same way.
    error = psycopg.errors.lookup(sqlstate_class + "000")
    assert issubclass(error, psycopg.OperationalError)


class FakeProject:
    """A respx side effect answering the housekeeper RPCs like a healthy project.

    `faults[function]` holds responses or exceptions served in order (None:
    answer healthily this once) before the healthy answers resume; `sent`
    keeps every request body per function.
    """

    def __init__(self, expired_rows: int) -> None:
        self.remaining = expired_rows
        self.faults: dict[str, list[httpx.Response | Exception | None]] = {}
        self.sent: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, request: httpx.Request, name: str) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.setdefault(name, []).append(body)
        queue = self.faults.get(name)
        if queue:
            fault = queue.pop(0)
            if isinstance(fault, Exception):
                raise fault
            if fault is not None:
                return fault
        return httpx.Response(200, json=self._healthy(name, body))

    def _healthy(self, name: str, body: dict[str, Any]) -> Any:
        run = {"run_id": body.get("p_run_id"), "status": "running"}
        if name == "housekeeper_begin_run":
            return {"outcome": "started", "run": run, "abandoned": []}
        if name == "housekeeper_finish_run":
            return {"updated": True, "run": {**run, "status": body["p_status"]}}
        if name == "housekeeper_purge_prepare":
            return {
                "relation": "public.logs",
                "column_type": "timestamp with time zone",
                "with_time_zone": True,
                "indexed": True,
                "statement_timeout_ms": 8000,
            }
        if name == "housekeeper_purge_batch":
            count = min(body["p_limit"], self.remaining)
            if not body["p_dry_run"]:
                self.remaining -= count
            last = body["p_cutoff"] if count else None
            return {"count": count, "last": last, "elapsed_ms": 5.0}
        if name == "housekeeper_purge_estimate":
            return {"estimate": self.remaining}
        raise AssertionError(f"unexpected RPC {name}")


@pytest.fixture
def fake_project(
    mock: respx.MockRouter, set_env: Callable[..., None], no_key_leak: None
) -> Callable[[int], FakeProject]:
    """Point the jobs at a respx-mocked Supabase project (and at no database)."""

    def make(expired_rows: int) -> FakeProject:
        project = FakeProject(expired_rows)
        mock.post(url__regex=RPC.replace(".", r"\.") + r"(?P<name>\w+)$").mock(
            side_effect=project
        )
        set_env(
            DATABASE_URL=None,
            SUPABASE_URL=BASE,
            SUPABASE_SERVICE_ROLE_KEY=KEY,
            LOG_DIR="",
        )
        return project

    return make


def test_job_shrinks_a_batch_that_hit_the_statement_timeout(call, fake_project):
    project = fake_project(1200)
    timeout = _pgrst(500, "57014", "canceling statement due to statement timeout")
    project.faults["housekeeper_purge_batch"] = [timeout]

    reply = call("cleanup_logs")

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"
    assert reply.json["results"]["database"]["deleted"] == 1200
    limits = [body["p_limit"] for body in project.sent["housekeeper_purge_batch"]]
    assert limits[1] == limits[0] // 4
    assert project.sent["housekeeper_finish_run"][-1]["p_status"] == "success"


def test_job_with_a_rejected_key_answers_502_naming_the_key(call, fake_project):
    project = fake_project(10)
    project.faults["housekeeper_begin_run"] = [
        httpx.Response(401, json={"message": "Invalid API key"})
    ]

    reply = call("cleanup_logs")

    assert reply.status == 502
    error = reply.json["error"]
    assert error["code"] == "database_error"
    assert "SUPABASE_SERVICE_ROLE_KEY is not a service_role key" in error["message"]
    assert set(project.sent) == {"housekeeper_begin_run"}


def test_job_hit_by_a_5xx_mid_purge_answers_503_with_the_counts_so_far(
    call, fake_project
):
    project = fake_project(5000)
    # The first batch goes through, the second meets a gateway error.
    bad_gateway = httpx.Response(502, text="bad gateway")
    project.faults["housekeeper_purge_batch"] = [None, bad_gateway]

    reply = call("cleanup_logs")

    assert reply.status == 503
    assert reply.json["error"]["code"] == "database_unavailable"
    first_batch = project.sent["housekeeper_purge_batch"][0]["p_limit"]
    assert reply.json["results"]["database"]["deleted"] == first_batch
    assert reply.json["results"]["database"]["status"] == "failed"
    finish = project.sent["housekeeper_finish_run"][-1]
    assert finish["p_status"] == "failed"
    assert finish["p_counts"]["database"]["deleted"] == first_batch


def test_job_without_the_purge_functions_answers_503_naming_the_migration(
    call, fake_project
):
    project = fake_project(10)
    project.faults["housekeeper_purge_prepare"] = [
        _pgrst(404, "PGRST202", "Could not find the function")
    ]

    reply = call("cleanup_logs")

    assert reply.status == 503
    error = reply.json["error"]
    assert error["code"] == "migration_missing"
    assert f"apply supabase/migrations/{LOG_PURGE_MIGRATION}" in error["message"]
    assert project.sent["housekeeper_finish_run"][-1]["p_status"] == "failed"


def test_job_whose_batch_times_out_on_the_wire_answers_503(call, fake_project):
    project = fake_project(10)
    project.faults["housekeeper_purge_batch"] = [httpx.ReadTimeout("timed out")]

    reply = call("cleanup_logs")

    assert reply.status == 503
    assert "SUPABASE_READ_TIMEOUT_S" in reply.json["error"]["message"]
    assert project.sent["housekeeper_finish_run"][-1]["p_status"] == "failed"
