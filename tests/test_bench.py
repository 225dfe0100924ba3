"""`make bench-quick`, once per suite run, so the benchmark never rots."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from devstack.emulator import FUNCTIONS_DIR

REPO = FUNCTIONS_DIR.parent


def test_bench_quick_measures_every_section_and_writes_its_results():
    # A short folder: Postgres's socket path must stay under 108 bytes.
    scratch = Path(tempfile.mkdtemp(prefix="hk-bench-"))
    try:
        _check_bench_quick(scratch / "out", scratch / "work")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check_bench_quick(out: Path, work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(FUNCTIONS_DIR), str(REPO)])}
    for name in ("DATABASE_URL", "SUPABASE_URL", "CRON_SECRET", "LOG_DIR"):
        env.pop(name, None)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--work",
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = json.loads((out / "quick-latest.json").read_text())
    assert document["quick"] is True
    assert {"purge", "sweep", "coldstart", "media"} <= set(document)

    # Every approach deleted exactly the expired rows and files.
    for case in document["purge"]["cases"]:
        assert set(case["approaches"]) == {"raw", "product", "peer"}
        assert all(entry["correct"] for entry in case["approaches"].values()), case
        product = case["approaches"]["product"]
        assert product["max_rss_mb"]["max"] > 0
        assert product["longest_transaction_ms"]["max"] > 0
    assert all(case["correct"] for case in document["sweep"]["cases"])
    assert {c["case"] for c in document["coldstart"]["cases"]} == {
        "bare hello function",
        "health",
        "cleanup_logs, dry_run",
    }
    assert document["media"]["available"] is True
    assert document["media"]["video"]["output_bytes"] > 0

    # Each target has a verdict; the tables and the chart are there.
    names = [target["name"] for target in document["targets"]]
    assert any(name.startswith("purge backlog") for name in names)
    assert any(name.startswith("cold start") for name in names)
    assert "### Targets" in result.stdout
    assert "| raw DELETE (limit) |" in result.stdout
    chart = out / "quick-purge-throughput.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "quick-latest.md").read_text().count("|---") >= 5
    # Nothing is left running or lying around in the work folder's database.
    assert not (work / "purge" / "pg").exists()


def test_bench_hello_is_a_bare_function_answering_ok():
    source = REPO / "bench" / "hello" / "main.py"
    namespace: dict[str, object] = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102
    assert namespace["hello"](None) == "ok"
