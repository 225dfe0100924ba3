"""What the health target's cold start loads: only what it needs to answer."""

from __future__ import annotations

import subprocess
import sys

from devstack.emulator import FUNCTIONS_DIR


def test_health_cold_start_loads_no_run_machinery_driver_or_media():
    script = (
        "import sys, main, flask\n"
        "with flask.Flask('t').test_request_context('/'):\n"
        "    assert main.health(flask.request).status_code == 200\n"
        "heavy = {'housekeeper.runs', 'housekeeper.db', 'housekeeper.db.base',\n"
        "         'psycopg', 'PIL', 'boto3', 'housekeeper.media'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
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
