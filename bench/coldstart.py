"""Cold start: process start to the first 200, against a bare hello function.

Each run starts `python -m functions_framework --target T` on loopback and
polls it (every 2 ms) until it answers 200; the time runs from just before
the process is spawned to that answer. The targets take turns so that a
change in the machine's load hits them alike.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    BENCH_SECRET,
    FUNCTIONS_DIR,
    REPO,
    fmt_ratio,
    markdown_table,
    product_env,
    small_database,
    spread,
)
from devstack.postgres import free_port

HELLO = REPO / "bench" / "hello" / "main.py"
POLL_S = 0.002
TIMEOUT_S = 60.0

# (label, source, target, method, body)
CASES: tuple[tuple[str, Path, str, str, dict[str, Any] | None], ...] = (
    ("bare hello function", HELLO, "hello", "GET", None),
    ("health", FUNCTIONS_DIR / "main.py", "health", "GET", None),
    (
        "cleanup_logs, dry_run",
        FUNCTIONS_DIR / "main.py",
        "cleanup_logs",
        "POST",
        {"dry_run": True},
    ),
)


def _request(
    port: int, method: str, body: dict[str, Any] | None
) -> tuple[int, bytes] | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {BENCH_SECRET}",
        }
    try:
        connection.request(method, "/", body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except ConnectionError:
        return None
    finally:
        connection.close()


def start_to_first_200(
    source: Path,
    target: str,
    method: str,
    body: dict[str, Any] | None,
    env: dict[str, str],
    log: Path,
) -> float:
    """Seconds from spawning the emulator to its first 200."""
    port = free_port()
    command = [
        sys.executable, "-m", "functions_framework",
        "--target", target,
        "--source", str(source),
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    with open(log, "ab") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            cwd=source.parent,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        while time.perf_counter() - started < TIMEOUT_S:
            answer = _request(port, method, body)
            if answer is not None:
                status, text = answer
                if status != 200:
                    raise RuntimeError(f"{target} answered {status}: {text[:300]!r}")
                return time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError(f"{target} exited {process.returncode}; see {log}")
            time.sleep(POLL_S)
        raise RuntimeError(f"{target} did not answer within {TIMEOUT_S} s")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run(
    work_dir: Path, runs: int, log: Callable[[str], None], *, warmup: bool = True
) -> dict[str, Any]:
    """`runs` cold starts of each case, after one discarded warm-up each."""
    server = small_database(work_dir / "pg")
    emulator_log = work_dir / "emulator.log"
    env = product_env(DATABASE_URL=server.url, LOG_DIR="")
    times: dict[str, list[float]] = {label: [] for label, *_ in CASES}
    try:
        first = 0 if warmup else 1
        for attempt in range(first, runs + 1):
            for label, source, target, method, body in CASES:
                seconds = start_to_first_200(
                    source, target, method, body, env, emulator_log
                )
                # The first round warms the page cache and the .pyc files.
                if attempt:
                    times[label].append(seconds)
    finally:
        server.stop(quiet=True)
        shutil.rmtree(work_dir, ignore_errors=True)
    baseline = spread(times[CASES[0][0]])["median"]
    cases = []
    for label, *_ in CASES:
        figures = spread(times[label])
        cases.append(
            {
                "case": label,
                "seconds": figures,
                "ratio_to_hello": figures["median"] / baseline,
            }
        )
        log(f"  {label}: {figures['median'] * 1000:.0f} ms")
    return {"runs": runs, "warmup": warmup, "cases": cases}


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Process start to first 200, with the ratio to the bare function."""
    rows = [
        [
            case["case"],
            f"{case['seconds']['median'] * 1000:.0f}",
            f"{case['seconds']['min'] * 1000:.0f}-{case['seconds']['max'] * 1000:.0f}",
            fmt_ratio(case["ratio_to_hello"]),
        ]
        for case in results["cases"]
    ]
    title = (
        f"Cold start: process start to the first 200 (median of {results['runs']} runs)"
    )
    return [
        (title, markdown_table(["target", "ms", "range ms", "vs bare hello"], rows))
    ]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """health at most 1.2x the bare function."""
    health = next(c for c in results["cases"] if c["case"] == "health")
    ratio = health["ratio_to_hello"]
    return [
        {
            "name": "cold start: health vs a bare functions-framework function",
            "target": "<= 1.20x",
            "measured": f"{ratio:.2f}x ({health['seconds']['median'] * 1000:.0f} ms)",
            "met": ratio <= 1.2,
            "note": "",
        }
    ]
