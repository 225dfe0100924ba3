"""Contract tests: what the deploy configs would send is what the handlers accept.

Each Cloud Scheduler job's exact request (method, headers, body bytes) is
replayed against the functions-framework emulator of the target it names,
with the environment Terraform gives that function. Each Render start command
runs, as Render would run it, against the local stack: exit 0 when the
handler succeeds, non-zero when it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.postgres import free_port
from tests.deploy import configs
from tests.support import TEST_PREVIOUS_SECRET, TEST_SECRET, create_log_table

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", configs.REPO / ".venv")) / "bin"
CALL_FUNCTION = configs.REPO / "scripts" / "call-function.sh"
OK_EXIT_STATUSES = ("success", "partial", "skipped", "dry_run")


def _require_target(job_id: str, request: pytest.FixtureRequest | None = None) -> str:
    entry_point: str = configs.default_jobs()[job_id]["entry_point"]
    if entry_point not in configs.entry_points_in_main():
        pytest.skip(f"job {job_id} is not built yet (no {entry_point} in main.py)")
    if job_id == "migrate-cdn-to-r2" and request is not None:
        # Its storage (moto's S3 as R2) and its tables, as a deployment has them.
        request.getfixturevalue("r2_env")
    return entry_point


def _seed(conn: Any) -> None:
    create_log_table(conn)
    conn.execute(
        'insert into logs ("timestamp", message) values'
        " (now() - interval '400 days', 'expired'), (now(), 'kept')"
    )


def scheduler_request(job_id: str, secret: str) -> dict[str, Any]:
    """The request Cloud Scheduler sends for a job, as Terraform declares it."""
    job = configs.default_jobs()[job_id]
    schedule_time = datetime.now(UTC).replace(second=0, microsecond=0)
    return {
        "method": "POST",
        "headers": {
            # From the scheduler job's http_target (scheduler.tf) ...
            "Content-Type": "application/json",
            "Authorization": f"Bearer {secret}",
            # ... and what Cloud Scheduler adds to every request.
            "User-Agent": "Google-Cloud-Scheduler",
            "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": f"housekeeper-{job_id}",
            "X-CloudScheduler-ScheduleTime": schedule_time.isoformat().replace(
                "+00:00", "Z"
            ),
        },
        "body": configs.scheduler_body(job),
    }


# Cloud Scheduler -----------------------------------------------------------------


@pytest.mark.parametrize("job_id", sorted(configs.default_jobs()))
def test_scheduler_request_succeeds_against_the_emulated_target(
    job_id, emulator, conn, clean_ledger, request
):
    entry_point = _require_target(job_id, request)
    _seed(conn)
    job = configs.default_jobs()[job_id]
    emu = emulator(entry_point, **configs.function_environment(job))

    request = scheduler_request(job_id, TEST_SECRET)
    response = requests.request(
        request["method"], emu.url, headers=request["headers"],
        data=request["body"], timeout=configs.effective_deadline_s(job),
    )  # fmt: skip

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "success"
    assert answer["job"] == job_id


def test_scheduler_request_purges_only_what_the_retention_allows(
    emulator, conn, clean_ledger
):
    _require_target("cleanup-logs")
    _seed(conn)
    job = configs.default_jobs()["cleanup-logs"]
    emu = emulator("cleanup_logs", **configs.function_environment(job))
    request = scheduler_request("cleanup-logs", TEST_SECRET)

    response = requests.post(
        emu.url, headers=request["headers"], data=request["body"], timeout=60
    )

    assert response.status_code == 200, response.text
    assert response.json()["results"]["database"]["deleted"] == 1
    assert [r[0] for r in conn.execute("select message from logs")] == ["kept"]


def test_scheduler_request_with_the_previous_secret_succeeds_during_a_rotation(
    emulator, conn, clean_ledger
):
    # Mid-rotation: the function already has the new secret and still accepts
    # the old one that a not-yet-updated scheduler job sends.
    _require_target("cleanup-logs")
    _seed(conn)
    job = configs.default_jobs()["cleanup-logs"]
    emu = emulator(
        "cleanup_logs",
        **configs.function_environment(job),
        CRON_SECRET=TEST_SECRET,
        CRON_SECRET_PREVIOUS=TEST_PREVIOUS_SECRET,
    )
    request = scheduler_request("cleanup-logs", TEST_PREVIOUS_SECRET)

    response = requests.post(
        emu.url, headers=request["headers"], data=request["body"], timeout=60
    )

    assert response.status_code == 200, response.text


# Exit codes of start commands ------------------------------------------------------


def run_start_command(
    command: str, env: Mapping[str, str], timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a start command the way Render does: a shell in the repository root."""
    base = {
        # Only what a fresh container has: no PYTHONPATH, the venv's python first.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
    }
    return subprocess.run(
        ["bash", "-c", command], cwd=configs.REPO, env={**base, **env},
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


def exit_contract_problems(
    command: str, *, ok_env: Mapping[str, str], failing_env: Mapping[str, str]
) -> list[str]:
    """What is wrong with a start command's exit codes (empty when nothing)."""
    problems = []
    ok = run_start_command(command, ok_env)
    if ok.returncode != 0:
        problems.append(
            f"exit {ok.returncode} although the handler succeeded: "
            f"{(ok.stdout + ok.stderr)[-500:]}"
        )
    failing = run_start_command(command, failing_env)
    if failing.returncode == 0:
        problems.append(f"exit 0 although the handler failed: {failing.stdout[-500:]}")
    return problems


def _closed_database_url() -> str:
    # A port nothing listens on: the handler answers 503 at once.
    return f"postgresql://housekeeper@127.0.0.1:{free_port()}/housekeeper"


def render_env(service: Mapping[str, Any], stack: Mapping[str, str]) -> dict[str, str]:
    """A Render service's declared variables; prompted ones come from the stack."""
    env = {}
    for key, entry in configs.render_env(service).items():
        if entry.get("sync") is False:
            # A prompt left blank arrives as an empty value.
            env[key] = stack.get(key, "")
        else:
            env[key] = str(entry["value"])
    return env


@pytest.mark.parametrize("service", configs.render_services(), ids=lambda s: s["name"])
def test_render_start_command_exits_zero_on_success_and_non_zero_on_failure(
    service, env, conn, clean_ledger, leak_guard, request
):
    job_id, _ = configs.render_invocation(service)
    _require_target(job_id, request)
    _seed(conn)
    ok_env = render_env(service, env)
    failing_env = {**ok_env, "DATABASE_URL": _closed_database_url()}

    ok = run_start_command(service["startCommand"], ok_env)
    failing = run_start_command(service["startCommand"], failing_env)
    leak_guard.add(ok.stdout + ok.stderr + failing.stdout + failing.stderr)

    assert ok.returncode == 0, ok.stdout + ok.stderr
    answer = json.loads(ok.stdout)
    assert answer["status"] == "success"
    assert answer["trigger"] == "render"
    assert failing.returncode != 0, failing.stdout
    assert json.loads(failing.stdout)["status"] == "failed"


@pytest.mark.parametrize("service", configs.render_services(), ids=lambda s: s["name"])
def test_render_fallback_skips_after_a_recent_success(
    service, env, conn, clean_ledger, leak_guard, request
):
    job_id, _ = configs.render_invocation(service)
    _require_target(job_id, request)
    _seed(conn)
    ok_env = render_env(service, env)

    first = run_start_command(service["startCommand"], ok_env)
    second = run_start_command(service["startCommand"], ok_env)
    leak_guard.add(first.stdout + first.stderr + second.stdout + second.stderr)

    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout)["status"] == "skipped"


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")


def _https_route(job_id: str) -> str:
    # The documented alternative start command (README, "Deploy").
    body = json.dumps(
        {**configs.job_params(configs.default_jobs()[job_id]), "trigger": "render",
         "skip_if_succeeded_within": "20h"},
        separators=(",", ":"),
    )  # fmt: skip
    return f"bash scripts/call-function.sh \"$FUNCTION_URL\" '{body}'"


@needs_curl
def test_https_route_exits_zero_on_success_and_non_zero_on_failure(
    emulator, conn, clean_ledger
):
    _require_target("cleanup-logs")
    _seed(conn)
    job = configs.default_jobs()["cleanup-logs"]
    healthy = emulator("cleanup_logs", **configs.function_environment(job))
    broken = emulator(
        "cleanup_logs",
        **configs.function_environment(job),
        DATABASE_URL=_closed_database_url(),
    )

    problems = exit_contract_problems(
        _https_route("cleanup-logs"),
        ok_env={"FUNCTION_URL": healthy.url, "CRON_SECRET": TEST_SECRET},
        failing_env={"FUNCTION_URL": broken.url, "CRON_SECRET": TEST_SECRET},
    )
    assert problems == []


@needs_curl
def test_start_command_that_turns_http_500_into_exit_0_fails_the_contract(
    emulator, conn, clean_ledger
):
    _require_target("cleanup-logs")
    _seed(conn)
    healthy = emulator("cleanup_logs")
    # No secret configured: the handler refuses every request with a 500.
    unconfigured = emulator("cleanup_logs", CRON_SECRET="")
    assert requests.post(unconfigured.url, timeout=30).status_code == 500
    # The original design's command: curl without --fail exits 0 on a 500.
    naive = 'curl -s -X POST "$FUNCTION_URL" -H "Authorization: Bearer $CRON_SECRET"'

    problems = exit_contract_problems(
        naive,
        ok_env={"FUNCTION_URL": healthy.url, "CRON_SECRET": TEST_SECRET},
        failing_env={"FUNCTION_URL": unconfigured.url, "CRON_SECRET": TEST_SECRET},
    )
    assert len(problems) == 1
    assert problems[0].startswith("exit 0 although the handler failed")

    # The shipped HTTPS route passes the same contract.
    assert (
        exit_contract_problems(
            _https_route("cleanup-logs"),
            ok_env={"FUNCTION_URL": healthy.url, "CRON_SECRET": TEST_SECRET},
            failing_env={"FUNCTION_URL": unconfigured.url, "CRON_SECRET": TEST_SECRET},
        )
        == []
    )
