"""scripts/call-function.sh, the HTTPS route, run with a stand-in curl."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.deploy import configs

SCRIPT = configs.REPO / "scripts" / "call-function.sh"
SECRET = "hk-script-Secr3t+/=value"

FAKE_CURL = """#!/usr/bin/env bash
# Records its arguments, and the content of any @file header, then exits as told.
for argument in "$@"; do
  printf 'ARG %s\\n' "$argument"
  case "$argument" in
    @*) printf 'HEADER-FILE %s\\n' "$(cat "${argument#@}")" ;;
  esac
done
exit "${FAKE_CURL_EXIT:-0}"
"""


@pytest.fixture
def fake_curl(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    curl = bin_dir / "curl"
    curl.write_text(FAKE_CURL)
    curl.chmod(0o755)
    return bin_dir


def _call(
    bin_dir: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    environment = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "CRON_SECRET": SECRET,
        **env,
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], env=environment, capture_output=True,
        text=True, timeout=30, check=False,
    )  # fmt: skip
    arguments = [
        line[4:] for line in result.stdout.splitlines() if line.startswith("ARG ")
    ]
    return result, arguments


@pytest.mark.parametrize(
    ("given", "called"),
    [
        ("fn-abc.a.run.app/", "https://fn-abc.a.run.app/"),
        ("https://fn-abc.a.run.app/", "https://fn-abc.a.run.app/"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
    ],
)
def test_scheme_is_added_exactly_once(fake_curl, given, called):
    result, arguments = _call(fake_curl, given)
    assert result.returncode == 0, result.stderr
    assert arguments[-1] == called


def test_curl_fails_on_non_2xx_and_is_bounded_in_time(fake_curl):
    _, arguments = _call(fake_curl, "https://fn.example/", '{"dry_run":true}')
    assert "--fail-with-body" in arguments
    assert arguments[arguments.index("--max-time") + 1] == "600"
    assert arguments[arguments.index("--request") + 1] == "POST"
    assert "Content-Type: application/json" in arguments
    assert arguments[arguments.index("--data") + 1] == '{"dry_run":true}'


def test_max_time_follows_call_max_time_s(fake_curl):
    _, arguments = _call(fake_curl, "https://fn.example/", CALL_MAX_TIME_S="960")
    assert arguments[arguments.index("--max-time") + 1] == "960"


def test_secret_reaches_curl_through_a_file_never_the_command_line(fake_curl):
    result, arguments = _call(fake_curl, "https://fn.example/")
    assert all(SECRET not in argument for argument in arguments)
    assert f"HEADER-FILE Authorization: Bearer {SECRET}" in result.stdout


def test_curl_failure_is_the_script_s_exit_status(fake_curl):
    # curl exits 22 on an HTTP error answer when --fail-with-body is given.
    result, _ = _call(fake_curl, "https://fn.example/", FAKE_CURL_EXIT="22")
    assert result.returncode == 22


def test_missing_secret_fails_before_any_call(fake_curl):
    result, arguments = _call(fake_curl, "https://fn.example/", CRON_SECRET="")
    assert result.returncode != 0
    assert arguments == []
    assert "CRON_SECRET must be set" in result.stderr
