"""Logging: Cloud Logging's structured JSON, plain JSON, text, and redaction."""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from housekeeper.config import get_settings, load_settings
from housekeeper.runs import JobOutcome, RunContext
from housekeeper.telemetry import REDACTED, configure, redact, register_secrets
from tests.support import TEST_SECRET, FakeJob, create_log_table, run_fake_job

TRACE_ID = "105445aa7843bc8bf206b12000100000"
PROJECT = "hk-test-project"
LABELS = "logging.googleapis.com/labels"
PASSWORD = "p@ss:w/rd!"


def _json_lines(text: str) -> list[dict[str, Any]]:
    # Every line must parse: a line that does not is a bug in itself.
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _housekeeper_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e.get(LABELS, {}).get("python_logger", "").startswith("housekeeper")
    ]


@pytest.fixture
def on_cloud_functions(set_env):
    """The environment Cloud Functions gives: K_SERVICE set, LOG_FORMAT auto."""
    set_env(
        K_SERVICE="housekeeper-cleanup-logs",
        LOG_FORMAT="auto",
        GOOGLE_CLOUD_PROJECT=PROJECT,
    )


def test_on_cloud_functions_logs_are_structured_json_on_stdout_with_labels_and_trace(
    on_cloud_functions, call, conn, clean_ledger, capsys
):
    create_log_table(conn)

    reply = call("cleanup_logs", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"})

    assert reply.status == 200, reply.text
    run_id = reply.json["run_id"]
    output = capsys.readouterr()
    entries = _housekeeper_entries(_json_lines(output.out))
    assert "housekeeper" not in output.err
    [summary] = [e for e in entries if e.get("message", "").startswith("cleanup-logs")]
    assert summary["severity"] == "INFO"
    assert summary[LABELS]["job"] == "cleanup-logs"
    assert summary[LABELS]["run_id"] == run_id
    assert summary["logging.googleapis.com/trace"] == (
        f"projects/{PROJECT}/traces/{TRACE_ID}"
    )
    assert summary["logging.googleapis.com/spanId"] == "0000000000000001"
    assert summary["logging.googleapis.com/trace_sampled"] is True
    assert summary["status"] == "success"
    assert summary["counts"] == {
        "rows_deleted": 0,
        "files_deleted": 0,
        "bytes_deleted": 0,
    }
    assert isinstance(summary["duration_ms"], int)
    for entry in entries:
        assert entry[LABELS]["job"] == "cleanup-logs"
        assert entry[LABELS]["run_id"] == run_id


def test_on_cloud_functions_a_crash_is_one_error_entry_carrying_the_traceback(
    on_cloud_functions, env, conn, clean_ledger, leak_guard, capsys
):
    def crash(ctx: RunContext) -> JobOutcome:
        raise ZeroDivisionError("division by zero")

    _, body = run_fake_job(FakeJob(crash), leak_guard)

    entries = _housekeeper_entries(_json_lines(capsys.readouterr().out))
    errors = [e for e in entries if e["severity"] == "ERROR"]
    assert len(errors) == 1
    assert "Traceback (most recent call last)" in errors[0]["message"]
    assert "ZeroDivisionError: division by zero" in errors[0]["message"]
    assert errors[0][LABELS]["run_id"] == body["run_id"]


def test_on_cloud_functions_a_secret_in_the_request_url_is_redacted(
    on_cloud_functions, call, capsys, leak_guard
):
    reply = call("cleanup_logs", query={"note": TEST_SECRET})

    assert reply.status == 400, reply.text
    out = capsys.readouterr().out
    leak_guard.add(out)
    [refused] = _housekeeper_entries(_json_lines(out))
    assert refused["severity"] == "WARNING"
    assert refused["httpRequest"]["requestUrl"].endswith(f"?note={REDACTED}")


def test_on_cloud_functions_a_mapping_message_stays_json_and_is_redacted(
    on_cloud_functions, env, capsys
):
    configure(get_settings())

    logging.getLogger("housekeeper.test").info({"event": "probe", "key": TEST_SECRET})

    [entry] = _housekeeper_entries(_json_lines(capsys.readouterr().out))
    assert entry["event"] == "probe"
    assert entry["key"] == REDACTED


def test_log_format_json_off_cloud_functions_writes_json_lines_to_stdout(
    set_env, call, conn, clean_ledger, capsys
):
    set_env(LOG_FORMAT="json")
    create_log_table(conn)

    reply = call("cleanup_logs", json={"retention_days": 30})

    assert reply.status == 200, reply.text
    output = capsys.readouterr()
    entries = _json_lines(output.out)
    assert output.err == ""
    [summary] = [e for e in entries if e["message"].startswith("cleanup-logs")]
    assert summary["severity"] == "INFO"
    assert summary["logger"] == "housekeeper.runs"
    assert summary["job"] == "cleanup-logs"
    assert summary["run_id"] == reply.json["run_id"]
    assert summary["counts"]["rows_deleted"] == 0
    assert summary["time"].endswith("+00:00")
    assert not any(LABELS in e for e in entries)


def test_log_format_text_writes_readable_lines_with_job_and_run_id_to_stderr(
    call, conn, clean_ledger, capsys
):
    create_log_table(conn)

    reply = call("cleanup_logs")

    run_id = reply.json["run_id"]
    output = capsys.readouterr()
    assert output.out == ""
    [line] = [x for x in output.err.splitlines() if "cleanup-logs success in" in x]
    assert f" INFO housekeeper.runs [cleanup-logs {run_id}] " in line
    assert line.split(" ", 1)[0].endswith("+00:00")


@pytest.mark.parametrize("outcome", ["success", "skipped", "dry_run"])
def test_one_info_summary_per_run_with_counts_and_duration(
    outcome, call, conn, clean_ledger, log_records
):
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp") values'
        " (now() - interval '40 days'), (now() - interval '41 days')"
    )
    body: dict[str, Any] = {}
    if outcome == "skipped":
        call("cleanup_logs")
        log_records.clear()
        body = {"skip_if_succeeded_within": "1h"}
    elif outcome == "dry_run":
        body = {"dry_run": True}

    reply = call("cleanup_logs", json=body)

    assert reply.json["status"] == outcome
    infos = [r for r in log_records if r.levelno == logging.INFO]
    assert len(infos) == 1
    fields = infos[0].json_fields
    assert fields["status"] == outcome
    assert fields["run_id"] == reply.json["run_id"]
    assert fields["duration_ms"] == reply.json["duration_ms"]
    if outcome == "success":
        assert fields["counts"] == {
            "rows_deleted": 2,
            "files_deleted": 0,
            "bytes_deleted": 0,
        }
    assert f"in {reply.json['duration_ms']} ms" in infos[0].getMessage()


def test_crash_logs_its_traceback_exactly_once(
    env, conn, clean_ledger, leak_guard, log_records, capsys
):
    def crash(ctx: RunContext) -> JobOutcome:
        raise ZeroDivisionError("division by zero")

    answer, _ = run_fake_job(FakeJob(crash), leak_guard)

    assert answer.status == 500
    assert len([r for r in log_records if r.exc_info or r.exc_text]) == 1
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 1
    assert err.count("ZeroDivisionError: division by zero") == 1


def test_secret_inside_an_exception_message_is_redacted_from_logs_and_answer(
    env, conn, clean_ledger, leak_guard, capsys
):
    def crash(ctx: RunContext) -> JobOutcome:
        encoded = quote(TEST_SECRET, safe="")
        raise RuntimeError(
            f"token {TEST_SECRET} refused by https://api.invalid/v1?key={encoded}"
        )

    answer, body = run_fake_job(FakeJob(crash), leak_guard)

    err = capsys.readouterr().err
    leak_guard.add(err)
    assert answer.status == 500
    assert body["error"]["message"] == "internal error; see the logs"
    assert f"RuntimeError: token {REDACTED} refused by" in err
    assert f"?key={REDACTED}" in err


@pytest.mark.parametrize(
    "form",
    [
        TEST_SECRET,
        quote(TEST_SECRET, safe=""),
        quote(TEST_SECRET),
        quote_plus(TEST_SECRET),
        re.sub(
            "%[0-9A-F]{2}", lambda m: m.group().lower(), quote(TEST_SECRET, safe="")
        ),
        TEST_SECRET.replace("/", "%2F"),
        json.dumps(TEST_SECRET)[1:-1],
    ],
    ids=["raw", "encoded", "slash_kept", "form", "lower_hex", "mixed", "json"],
)
def test_secret_inside_a_url_is_redacted_in_every_encoding(
    form, env, log_records, capsys
):
    configure(get_settings())
    url = f"https://cdn.invalid/a.jpg?sig={form}&x=1"

    logging.getLogger("housekeeper.test").warning(
        "download of %s failed", url, extra={"json_fields": {"url": url}}
    )

    [record] = log_records
    assert record.getMessage() == f"download of {url.replace(form, REDACTED)} failed"
    assert record.json_fields == {"url": url.replace(form, REDACTED)}
    assert form not in capsys.readouterr().err


@pytest.mark.parametrize(
    "dsn",
    [
        f"postgresql://app:{quote(PASSWORD, safe='')}@db.invalid:5432/app",
        f"host=db.invalid user=app password='{PASSWORD}' dbname=app",
        f"postgresql://app@db.invalid/app?password={quote(PASSWORD, safe='')}",
    ],
    ids=["uri", "keyword", "query"],
)
def test_database_password_is_redacted_as_written_and_decoded(dsn, log_records):
    configure(load_settings({"DATABASE_URL": dsn, "LOG_FORMAT": "text"}))
    log = logging.getLogger("housekeeper.test")

    log.error("login as app with %s failed", PASSWORD)
    log.error("cannot reach %s", quote(PASSWORD, safe=""))

    assert [r.getMessage() for r in log_records] == [
        f"login as app with {REDACTED} failed",
        f"cannot reach {REDACTED}",
    ]


def test_redaction_replaces_a_secret_containing_another_whole():
    register_secrets(["abcd-1234", "abcd-1234-efgh-5678"])

    assert redact("x abcd-1234-efgh-5678 y abcd-1234 z") == (
        f"x {REDACTED} y {REDACTED} z"
    )


def test_concurrent_configuration_installs_one_handler(set_env):
    set_env(LOG_FORMAT="json")
    configure(get_settings())
    set_env(LOG_FORMAT="text")
    settings = get_settings()
    barrier = threading.Barrier(8)

    def configure_at_once() -> None:
        barrier.wait(timeout=10)
        configure(settings)

    threads = [threading.Thread(target=configure_at_once) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    handlers = logging.getLogger("housekeeper").handlers
    assert len([h for h in handlers if getattr(h, "_housekeeper", False)]) == 1


def test_a_malformed_log_call_is_logged_redacted_instead_of_raising(env, log_records):
    configure(get_settings())

    logging.getLogger("housekeeper.test").warning("%s and %s", TEST_SECRET)

    [record] = log_records
    assert record.getMessage() == f"%s and %s ('{REDACTED}',)"
