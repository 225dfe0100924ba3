"""`python -m housekeeper`: invoke a job in-process, list the run ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest

from devstack.emulator import FUNCTIONS_DIR
from devstack.postgres import free_port
from housekeeper.cli import main
from tests.support import create_log_table, insert_run, ledger, table_lock


def _old_rows(conn: Any, count: int = 1) -> None:
    conn.execute(
        'insert into logs ("timestamp", message)'
        " select now() - interval '40 days', 'old' from generate_series(1, %s)",
        (count,),
    )


def _invoke(capsys: Any, *args: str) -> tuple[int, dict[str, Any], str]:
    code = main(["invoke", "cleanup-logs", *args])
    output = capsys.readouterr()
    return code, json.loads(output.out), output.err


def test_invoke_success_prints_the_json_answer_and_exits_0(
    env, conn, clean_ledger, leak_guard
):
    create_log_table(conn)
    _old_rows(conn)

    result = subprocess.run(
        [sys.executable, "-m", "housekeeper", "invoke", "cleanup-logs"]
        + ["--param", "retention_days=30"],
        env={**os.environ, "PYTHONPATH": str(FUNCTIONS_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    leak_guard.add(result.stdout + result.stderr)

    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["status"] == "success"
    assert body["results"]["database"]["deleted"] == 1
    assert "cleanup-logs success in" in result.stderr
    [run] = ledger(conn)
    assert (run["run_id"], run["trigger"]) == (body["run_id"], "local")


def test_invoke_dry_run_exits_0(env, conn, clean_ledger, capsys):
    create_log_table(conn)
    _old_rows(conn)

    code, body, _ = _invoke(capsys, "--param", "dry_run=true")

    assert code == 0
    assert body["status"] == "dry_run"
    assert body["results"]["database"]["would_delete"] == 1


def test_invoke_partial_exits_0(env, pg, conn, clean_ledger, capsys):
    create_log_table(conn)
    _old_rows(conn, 5000)

    # The first batch waits on the lock past the one-second budget, so the
    # run stops after it with rows left.
    with table_lock(pg.url) as lock:
        release = threading.Timer(1.3, lock.commit)
        release.start()
        try:
            code, body, _ = _invoke(capsys, "--param", "time_budget_s=1")
        finally:
            release.join()

    assert code == 0
    assert body["status"] == "partial"
    assert body["results"]["database"]["remaining_estimate"] > 0


def test_invoke_skipped_after_a_recent_success_exits_0(env, conn, clean_ledger, capsys):
    create_log_table(conn)
    insert_run(conn, started_ago=timedelta(hours=1))

    code, body, _ = _invoke(capsys, "--param", "skip_if_succeeded_within=6h")

    assert code == 0
    assert body["status"] == "skipped"


def test_invoke_skipped_while_another_run_holds_the_lock_exits_0(
    env, conn, clean_ledger, capsys
):
    create_log_table(conn)
    active = insert_run(conn, status="running", started_ago=timedelta(seconds=5))

    code, body, _ = _invoke(capsys)

    assert code == 0
    assert body["status"] == "skipped"
    assert body["active_run_id"] == active


def test_invoke_records_the_trigger_it_is_given(env, conn, clean_ledger, capsys):
    create_log_table(conn)

    code, _, _ = _invoke(capsys, "--param", "trigger=manual")

    assert code == 0
    assert [run["trigger"] for run in ledger(conn)] == ["manual"]


def test_invoke_without_the_cron_secret_exits_non_zero(set_env, capsys):
    set_env(CRON_SECRET=None)

    code, body, _ = _invoke(capsys)

    assert code != 0
    assert body["error"]["code"] == "configuration_error"


def test_invoke_with_the_database_unreachable_exits_non_zero(set_env, capsys):
    set_env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")

    code, body, _ = _invoke(capsys)

    assert code != 0
    assert body["status"] == "failed"
    assert body["error"]["code"] == "database_unavailable"


def test_invoke_with_an_invalid_parameter_exits_non_zero(env, capsys):
    code, body, _ = _invoke(capsys, "--param", "retention_days=0")

    assert code != 0
    assert body["error"]["parameter"] == "retention_days"


def test_invoke_of_an_unknown_job_exits_2(env, capsys):
    code = main(["invoke", "purge-everything"])

    assert code == 2
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "unknown_job"


def test_invoke_param_without_equals_is_a_usage_error(env, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["invoke", "cleanup-logs", "--param", "dry_run"])

    assert exit_info.value.code == 2
    assert "expected key=value" in capsys.readouterr().err


def test_invoke_keeps_stdout_to_the_json_answer_when_logs_are_json(
    set_env, conn, clean_ledger, capsys
):
    set_env(LOG_FORMAT="json")
    create_log_table(conn)

    code, body, err = _invoke(capsys)

    assert code == 0
    assert body["status"] == "success"
    summary = [json.loads(line) for line in err.splitlines() if line.strip()][-1]
    assert summary["run_id"] == body["run_id"]


@pytest.fixture
def history(conn, clean_ledger) -> dict[str, str]:
    """Three ledger entries of two jobs, oldest first."""
    return {
        "old": insert_run(
            conn,
            started_ago=timedelta(days=2),
            duration=timedelta(seconds=12.5),
            trigger="scheduler",
            counts={"rows_deleted": 66608, "files_deleted": 54},
        ),
        "failed": insert_run(
            conn,
            job="migrate-cdn-to-r2",
            status="failed",
            started_ago=timedelta(days=1),
            counts={"database": {"deleted": 5, "batches": 1}},
            error="connection lost",
        ),
        "running": insert_run(
            conn, status="running", started_ago=timedelta(seconds=30)
        ),
    }


def test_runs_prints_a_table_newest_first(env, history, capsys):
    code = main(["runs"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].split() == [
        "run_id", "job", "trigger", "status", "started", "(UTC)", "took", "counts",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == [
        history["running"][:8],
        history["failed"][:8],
        history["old"][:8],
    ]
    assert lines[1].split()[1:4] == ["cleanup-logs", "manual", "running"]
    assert "12.5s" in lines[3]
    assert "rows_deleted=66608 files_deleted=54" in lines[3]
    # The error first, then the numbers of a failed run's nested counts.
    assert lines[2].endswith(
        "error: connection lost  database.batches=1 database.deleted=5"
    )


def test_runs_filters_by_job_and_limits(env, history, capsys):
    code = main(["runs", "--job", "cleanup-logs", "--limit", "1"])

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(lines) == 2
    assert lines[1].startswith(history["running"][:8])


def test_runs_json_lists_the_ledger_entries(env, history, capsys):
    code = main(["runs", "--json", "--job", "cleanup-logs"])

    runs = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [run["run_id"] for run in runs] == [history["running"], history["old"]]
    assert runs[1]["counts"] == {"rows_deleted": 66608, "files_deleted": 54}
    assert runs[1]["started_at"].endswith("+00:00")
    assert set(runs[0]) >= {
        "run_id", "job", "trigger", "status", "started_at", "finished_at",
        "counts", "error", "scheduler_job", "schedule_time",
    }  # fmt: skip


def test_runs_with_an_empty_ledger_says_so(env, clean_ledger, capsys):
    code = main(["runs"])

    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "(no runs recorded yet)"


def test_runs_with_the_database_unreachable_exits_1(set_env, capsys):
    set_env(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")

    code = main(["runs"])

    output = capsys.readouterr()
    assert code == 1
    assert output.out == ""
    assert output.err.startswith("error: could not connect to the database")
