"""Run safety: the ledger, the one-run-per-job lock, the fallback skip, triggers."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
import pytest
import requests
from psycopg import sql

from devstack.postgres import free_port
from housekeeper.errors import DatabaseUnavailableError
from housekeeper.runs import JobOutcome, RunContext
from tests.support import (
    TEST_SECRET,
    FakeJob,
    create_log_table,
    insert_run,
    ledger,
    run_fake_job,
    table_lock,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {TEST_SECRET}"}
PASSWORD = "p@ss:w/rd!"
PASSWORD_FORMS = (
    PASSWORD,
    quote(PASSWORD, safe=""),
    quote(PASSWORD, safe="").lower(),
    quote_plus(PASSWORD),
    quote(PASSWORD),
)
SCHEDULE_TIME = "2026-12-04T03:00:00Z"


def _old_row(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (now() - interval '40 days', 'old')"
    )


def _log_messages(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute("select message from logs order by id")]


def _scheduler_headers(
    schedule_time: str = SCHEDULE_TIME, job_name: str = "housekeeper-cleanup-logs"
) -> dict[str, str]:
    return {
        "User-Agent": "Google-Cloud-Scheduler",
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": job_name,
        "X-CloudScheduler-ScheduleTime": schedule_time,
    }


def _post_at_once(
    pool: ThreadPoolExecutor, url: str, count: int
) -> list[Future[requests.Response]]:
    barrier = threading.Barrier(count)

    def post() -> requests.Response:
        barrier.wait(timeout=10)
        return requests.post(url, headers=AUTH, json={"retention_days": 30}, timeout=60)

    return [pool.submit(post) for _ in range(count)]


def _blocked_on_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "select count(*) from pg_stat_activity"
        " where application_name = 'housekeeper' and wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])


def _assert_exactly_one_of_concurrent_requests_runs(
    emulator: Any, conn: psycopg.Connection[Any], url: str, count: int
) -> None:
    create_log_table(conn)
    _old_row(conn)
    emu = emulator("cleanup_logs")

    with ThreadPoolExecutor(count) as pool:
        # The run that wins the lock then waits on the table lock, so every
        # other request arrives while it is still running.
        with table_lock(url):
            futures = _post_at_once(pool, emu.url, count)
            answered: list[Future[requests.Response]] = []
            try:
                for future in as_completed(futures, timeout=30):
                    answered.append(future)
                    if len(answered) == count - 1:
                        break
            except TimeoutError:
                pytest.fail(f"only {len(answered)} of {count - 1} requests answered")
            [active] = ledger(conn)
            assert active["status"] == "running"
        [winner] = [f for f in futures if f not in answered]
        won = winner.result(timeout=30)

    assert won.status_code == 200, won.text
    assert won.json()["status"] == "success"
    assert won.json()["run_id"] == active["run_id"]
    assert won.json()["results"]["database"]["deleted"] == 1
    for future in answered:
        response = future.result()
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["status"] == "skipped"
        assert body["reason"] == "busy"
        assert body["active_run_id"] == active["run_id"]
        assert body["run_id"] != active["run_id"]
    [run] = ledger(conn)
    assert (run["run_id"], run["status"]) == (active["run_id"], "success")

    log = emu.log_path.read_text()
    assert log.count("cleanup-logs success in") == 1
    assert log.count("cleanup-logs skipped in") == count - 1


def test_two_simultaneous_requests_run_once_and_the_other_is_answered_409_skipped(
    emulator, conn, pg, clean_ledger
):
    _assert_exactly_one_of_concurrent_requests_runs(emulator, conn, pg.url, 2)


def test_ten_concurrent_requests_run_once_and_nine_are_answered_409_skipped(
    emulator, conn, pg, clean_ledger
):
    _assert_exactly_one_of_concurrent_requests_runs(emulator, conn, pg.url, 10)


def test_run_killed_mid_way_leaves_a_stale_lease_that_a_new_run_takes_over(
    emulator, call, conn, pg, clean_ledger, log_records
):
    create_log_table(conn)
    _old_row(conn)
    emu = emulator("cleanup_logs", FUNCTION_TIMEOUT_S="2", RUN_LEASE_S="2")

    with ThreadPoolExecutor(1) as pool, table_lock(pg.url):
        request = pool.submit(requests.post, emu.url, headers=AUTH, timeout=60)
        wait_for(lambda: _blocked_on_lock(conn), what="the run to reach the table")
        emu.kill()
        with pytest.raises(requests.ConnectionError):
            request.result(timeout=20)

    [killed] = ledger(conn)
    assert killed["status"] == "running"
    assert killed["finished_at"] is None
    assert killed["lease_expires_at"] - killed["started_at"] == timedelta(seconds=2)
    lease_end = killed["lease_expires_at"]
    wait_for(
        lambda: conn.execute("select now() > %s", (lease_end,)).fetchone()[0],
        timeout_s=10,
        what="the lease to expire",
    )

    reply = call("cleanup_logs")

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"
    runs = {run["run_id"]: run for run in ledger(conn)}
    assert runs[killed["run_id"]]["status"] == "abandoned"
    assert runs[killed["run_id"]]["finished_at"] is not None
    assert "lease expired" in runs[killed["run_id"]]["error"]
    assert runs[reply.json["run_id"]]["status"] == "success"
    warnings = [r.getMessage() for r in log_records if r.levelno == logging.WARNING]
    assert any(killed["run_id"] in w and "abandoned" in w for w in warnings)


@pytest.fixture
def password_roles(conn: psycopg.Connection[Any]) -> Any:
    """Roles that log in with `p@ss:w/rd!` over TCP (password auth is on)."""
    roles = {
        "hk_pw_user": ("login", PASSWORD),
        "hk_pw_nologin": ("nologin", PASSWORD),
        "hk_pw_other": ("login", "another-password-entirely"),
    }
    for role, (login, password) in roles.items():
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("create role {} {} password {}").format(
                sql.Identifier(role), sql.SQL(login), sql.Literal(password)
            )
        )
    yield
    for role in roles:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


FAILING_URLS = {
    "database_missing": lambda pg: pg.url_for("hk_pw_user", PASSWORD, "no_such_db"),
    "login_revoked": lambda pg: pg.url_for("hk_pw_nologin", PASSWORD),
    "password_refused": lambda pg: pg.url_for("hk_pw_other", PASSWORD),
    "keyword_form": lambda pg: (
        f"host=127.0.0.1 port={pg.port} user=hk_pw_user "
        f"password='{PASSWORD}' dbname=no_such_db"
    ),
}


@pytest.mark.parametrize("case", sorted(FAILING_URLS))
def test_failed_connection_with_password_p_at_ss_is_answered_503_without_it(
    case, call, set_env, pg, password_roles, leak_guard, log_records, capsys, request
):
    request.node.extra_secrets = PASSWORD_FORMS
    set_env(DATABASE_URL=FAILING_URLS[case](pg))

    reply = call("cleanup_logs")

    assert reply.status == 503, reply.text
    assert reply.json["error"]["code"] == "database_unavailable"
    assert reply.json["error"]["message"].startswith(
        "could not connect to the database"
    )
    assert reply.json["status"] == "failed"
    errors = [r for r in log_records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "could not connect to the database" in errors[0].getMessage()
    output = capsys.readouterr()
    assert "could not connect to the database" in output.err
    for text in [*leak_guard.texts, output.out, output.err]:
        for form in PASSWORD_FORMS:
            assert form not in text


def test_failed_connection_in_the_emulator_is_logged_and_answered_without_password(
    emulator, pg, password_roles, request
):
    request.node.extra_secrets = PASSWORD_FORMS
    url = pg.url_for("hk_pw_user", PASSWORD, "no_such_db")
    emu = emulator("cleanup_logs", DATABASE_URL=url)

    response = requests.post(emu.url, headers=AUTH, timeout=30)

    assert response.status_code == 503, response.text
    emu.stop()
    log = emu.log_path.read_text()
    assert "ERROR housekeeper.runs" in log
    assert "could not connect to the database" in log
    for form in PASSWORD_FORMS:
        assert form not in response.text
        assert form not in log


def test_skip_if_succeeded_within_6h_after_a_success_5_hours_ago_is_skipped(
    call, conn, clean_ledger
):
    create_log_table(conn)
    _old_row(conn)
    found = insert_run(conn, started_ago=timedelta(hours=5, seconds=3))

    reply = call(
        "cleanup_logs", json={"skip_if_succeeded_within": "6h", "trigger": "render"}
    )

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "skipped"
    assert reply.json["reason"] == "recent_success"
    assert reply.json["found_run"]["run_id"] == found
    assert found in reply.json["message"]
    assert [run["run_id"] for run in ledger(conn)] == [found]
    assert _log_messages(conn) == ["old"]


def test_skip_if_succeeded_within_6h_after_a_success_7_hours_ago_runs(
    call, conn, clean_ledger
):
    create_log_table(conn)
    _old_row(conn)
    old = insert_run(conn, started_ago=timedelta(hours=7, seconds=3))

    reply = call(
        "cleanup_logs", json={"skip_if_succeeded_within": "6h", "trigger": "render"}
    )

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"
    runs = ledger(conn)
    assert [run["run_id"] for run in runs] == [old, reply.json["run_id"]]
    assert runs[1]["trigger"] == "render"
    assert _log_messages(conn) == []


@pytest.mark.parametrize(
    ("within", "ago", "expected"),
    [
        ("90m", timedelta(minutes=80), "skipped"),
        ("90m", timedelta(minutes=100), "success"),
        ("2d", timedelta(hours=47), "skipped"),
        ("3600", timedelta(minutes=59), "skipped"),
        ("3600", timedelta(minutes=61), "success"),
    ],
)
def test_skip_if_succeeded_within_reads_minutes_days_and_seconds(
    within, ago, expected, call, conn, clean_ledger
):
    create_log_table(conn)
    insert_run(conn, started_ago=ago, duration=timedelta(0))

    reply = call("cleanup_logs", json={"skip_if_succeeded_within": within})

    assert reply.status == 200, reply.text
    assert reply.json["status"] == expected


@pytest.mark.parametrize("status", ["failed", "partial", "dry_run", "abandoned"])
def test_skip_if_succeeded_within_counts_only_successes(
    status, call, conn, clean_ledger
):
    create_log_table(conn)
    insert_run(conn, status=status, started_ago=timedelta(hours=1))

    reply = call("cleanup_logs", json={"skip_if_succeeded_within": "6h"})

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"


def test_scheduler_retry_of_a_succeeded_schedule_time_is_answered_200_skipped(
    call, conn, clean_ledger
):
    create_log_table(conn)
    first = call("cleanup_logs", headers=_scheduler_headers())
    _old_row(conn)

    retry = call("cleanup_logs", headers=_scheduler_headers())

    assert first.status == 200, first.text
    assert first.json["status"] == "success"
    assert retry.status == 200, retry.text
    assert retry.json["status"] == "skipped"
    assert retry.json["reason"] == "retry_done"
    assert retry.json["found_run"]["run_id"] == first.json["run_id"]
    assert [run["run_id"] for run in ledger(conn)] == [first.json["run_id"]]
    assert _log_messages(conn) == ["old"]


def test_scheduler_retry_after_a_failed_attempt_runs_again(call, conn, clean_ledger):
    create_log_table(conn)
    failed = insert_run(
        conn,
        status="failed",
        trigger="scheduler",
        scheduler_job="housekeeper-cleanup-logs",
        schedule_time=datetime(2026, 12, 4, 3, tzinfo=UTC),
        error="database connection failed",
    )

    reply = call("cleanup_logs", headers=_scheduler_headers())

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"
    assert [run["run_id"] for run in ledger(conn)] == [failed, reply.json["run_id"]]


@pytest.mark.parametrize(
    "headers",
    [
        _scheduler_headers(schedule_time="2026-12-05T03:00:00Z"),
        _scheduler_headers(job_name="housekeeper-cleanup-logs-weekly"),
    ],
    ids=["next_schedule_time", "other_scheduler_job"],
)
def test_scheduler_run_after_a_success_of_another_schedule_runs(
    headers, call, conn, clean_ledger
):
    create_log_table(conn)
    call("cleanup_logs", headers=_scheduler_headers())

    reply = call("cleanup_logs", headers=headers)

    assert reply.status == 200, reply.text
    assert reply.json["status"] == "success"
    assert len(ledger(conn)) == 2


def test_trigger_identity_comes_from_cloud_scheduler_headers(call, conn, clean_ledger):
    create_log_table(conn)

    reply = call(
        "cleanup_logs",
        headers=_scheduler_headers(schedule_time="2026-12-04T03:00:00.250Z"),
    )

    assert reply.status == 200, reply.text
    assert reply.json["trigger"] == "scheduler"
    [run] = ledger(conn)
    assert run["trigger"] == "scheduler"
    assert run["scheduler_job"] == "housekeeper-cleanup-logs"
    assert run["schedule_time"] == datetime(2026, 12, 4, 3, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [(None, "manual"), ("render", "render"), ("manual", "manual"), ("LOCAL", "local")],
)
def test_trigger_parameter_names_the_trigger(sent, recorded, call, conn, clean_ledger):
    create_log_table(conn)
    body = {} if sent is None else {"trigger": sent}

    reply = call("cleanup_logs", json=body)

    assert reply.status == 200, reply.text
    assert reply.json["trigger"] == recorded
    [run] = ledger(conn)
    assert (run["trigger"], run["scheduler_job"], run["schedule_time"]) == (
        recorded,
        None,
        None,
    )


def test_unparsable_schedule_time_runs_and_warns(call, conn, clean_ledger, log_records):
    create_log_table(conn)

    reply = call("cleanup_logs", headers=_scheduler_headers(schedule_time="yesterday"))

    assert reply.status == 200, reply.text
    [run] = ledger(conn)
    assert (run["trigger"], run["schedule_time"]) == ("scheduler", None)
    assert any(
        "X-CloudScheduler-ScheduleTime" in r.getMessage()
        for r in log_records
        if r.levelno == logging.WARNING
    )


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({"trigger": "cron"}, "trigger"),
        ({"skip_if_succeeded_within": "6 hours"}, "skip_if_succeeded_within"),
        ({"skip_if_succeeded_within": "30s"}, "skip_if_succeeded_within"),
        ({"skip_if_succeeded_within": "31d"}, "skip_if_succeeded_within"),
        ({"time_budget_s": 0}, "time_budget_s"),
        ({"retention_days": 0}, "retention_days"),
        ({"dryrun": True}, "dryrun"),
    ],
)
def test_invalid_parameter_is_refused_400_before_any_database_access(
    body, parameter, call, set_env
):
    set_env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")

    reply = call("cleanup_logs", json=body)

    assert reply.status == 400, reply.text
    assert reply.json["error"]["code"] == "invalid_parameter"
    assert reply.json["error"]["parameter"] == parameter
    # The same database answers a valid request with 503: it was never asked.
    assert call("cleanup_logs").status == 503


def test_request_while_a_run_holds_the_lock_is_answered_409_with_the_active_run(
    call, conn, clean_ledger
):
    create_log_table(conn)
    _old_row(conn)
    active = insert_run(conn, status="running", started_ago=timedelta(seconds=10))

    reply = call("cleanup_logs")

    assert reply.status == 409, reply.text
    assert reply.json["status"] == "skipped"
    assert reply.json["reason"] == "busy"
    assert reply.json["active_run_id"] == active
    assert reply.json["run_id"] != active
    assert [run["run_id"] for run in ledger(conn)] == [active]
    assert _log_messages(conn) == ["old"]


def test_expired_lease_is_taken_over_and_the_stale_run_marked_abandoned(
    call, conn, clean_ledger
):
    create_log_table(conn)
    stale = insert_run(
        conn,
        status="running",
        started_ago=timedelta(minutes=20),
        lease=timedelta(minutes=11),
    )

    reply = call("cleanup_logs")

    assert reply.status == 200, reply.text
    runs = {run["run_id"]: run for run in ledger(conn)}
    assert runs[stale]["status"] == "abandoned"
    assert runs[reply.json["run_id"]]["status"] == "success"


def test_success_answer_carries_the_run_id_and_counts_recorded_in_the_ledger(
    call, conn, clean_ledger
):
    create_log_table(conn)
    _old_row(conn)

    reply = call("cleanup_logs")

    assert reply.status == 200, reply.text
    body = reply.json
    [run] = ledger(conn)
    assert body["run_id"] == run["run_id"]
    assert (run["job"], run["status"], run["trigger"]) == (
        "cleanup-logs",
        "success",
        "manual",
    )
    assert run["counts"] == {"rows_deleted": 1, "files_deleted": 0, "bytes_deleted": 0}
    assert run["error"] is None
    assert run["started_at"] <= run["finished_at"]
    for field in ("started_at", "finished_at"):
        assert body[field].endswith("+00:00")
    assert isinstance(body["duration_ms"], int)


def test_ledger_times_are_utc_whatever_the_session_time_zone(pg, conn, clean_ledger):
    insert_run(conn)

    with psycopg.connect(pg.url, autocommit=True) as other:
        other.execute("set timezone = 'America/New_York'")
        [listed] = other.execute(
            "select public.housekeeper_list_runs(null, 5)"
        ).fetchone()[0]
        summary = other.execute("select public.housekeeper_run_summary()").fetchone()
        begun = other.execute(
            "select public.housekeeper_begin_run('tz-job', gen_random_uuid(),"
            " 'manual', null, null, 60, null, '{}')"
        ).fetchone()[0]

    assert listed["started_at"].endswith("+00:00")
    assert listed["finished_at"].endswith("+00:00")
    assert summary[0]["cleanup-logs"]["last_success_at"].endswith("+00:00")
    assert begun["run"]["lease_expires_at"].endswith("+00:00")


def test_dependency_failure_is_recorded_failed_with_its_error_and_counts(
    env, conn, clean_ledger, leak_guard
):
    def fail(ctx: RunContext) -> JobOutcome:
        raise DatabaseUnavailableError(
            "database connection failed: server closed the connection",
            partial={"database": {"deleted": 5, "status": "failed"}, "retention": 30},
        )

    answer, body = run_fake_job(FakeJob(fail), leak_guard)

    assert answer.status == 503
    assert body["status"] == "failed"
    assert body["results"]["database"]["deleted"] == 5
    [run] = ledger(conn)
    assert run["run_id"] == body["run_id"]
    assert run["status"] == "failed"
    assert run["counts"] == {"database": {"deleted": 5}, "retention": 30}
    assert run["error"] == "database connection failed: server closed the connection"


def test_crash_is_answered_500_and_recorded_failed(env, conn, clean_ledger, leak_guard):
    def crash(ctx: RunContext) -> JobOutcome:
        raise ZeroDivisionError("division by zero")

    answer, body = run_fake_job(FakeJob(crash), leak_guard)

    assert answer.status == 500
    assert body["error"] == {
        "code": "internal_error",
        "message": "internal error; see the logs",
    }
    [run] = ledger(conn)
    assert (run["run_id"], run["status"]) == (body["run_id"], "failed")
    assert run["error"] == "internal error: ZeroDivisionError"


def test_run_taken_over_before_it_finished_stays_abandoned_and_warns(
    env, pg, conn, clean_ledger, leak_guard, log_records
):
    def taken_over(ctx: RunContext) -> JobOutcome:
        # What a takeover does to the row while this run still works.
        conn.execute(
            "update housekeeper.runs set status = 'abandoned', finished_at = now()"
            " where run_id = %s",
            (ctx.run_id,),
        )
        return JobOutcome("success", "done", {}, {"rows_deleted": 3})

    answer, body = run_fake_job(FakeJob(taken_over), leak_guard)

    assert answer.status == 200
    [run] = ledger(conn)
    assert run["status"] == "abandoned"
    assert run["counts"] == {}
    assert any(
        "taken over" in r.getMessage() and body["run_id"] in r.getMessage()
        for r in log_records
        if r.levelno == logging.WARNING
    )
