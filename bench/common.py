"""What every measurement shares: child processes, medians, tables, the machine."""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO / "functions"
# The child processes' bearer secret: made per run, never a real one.
BENCH_SECRET = secrets.token_urlsafe(24)


@dataclass
class Child:
    """How a child process ended: its output, exit code, peak memory and wall time."""

    stdout: str
    returncode: int
    max_rss_mb: float
    wall_s: float

    def json(self) -> Any:
        return json.loads(self.stdout)


def product_env(**overrides: str) -> dict[str, str]:
    """The environment of a product process: this one's, cleaned, plus overrides."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Settings of the developer's shell must not leak into a measurement.
        if not key.startswith(("SUPABASE_", "R2_", "LOGS_", "CRON_SECRET"))
        and key not in ("DATABASE_URL", "TIME_BUDGET_S", "K_SERVICE", "LOG_DIR")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(FUNCTIONS_DIR), str(REPO)])
    env["CRON_SECRET"] = BENCH_SECRET
    env["LOG_FORMAT"] = "text"
    env.update(overrides)
    return env


def run_child(
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: Path = REPO,
    stderr_path: Path | None = None,
) -> Child:
    """Run a command to its end; report the peak RSS of that process alone.

    `os.wait4` gives the child's own rusage, where `RUSAGE_CHILDREN` would
    give the maximum over every child this process ever waited for.
    """
    stderr = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL  # noqa: SIM115
    started = time.perf_counter()
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        stdout = process.stdout.read()
        process.stdout.close()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if not isinstance(stderr, int):
            stderr.close()
    wall_s = time.perf_counter() - started
    # ru_maxrss is in KiB on Linux.
    return Child(
        stdout.decode(errors="replace"),
        process.returncode,
        usage.ru_maxrss / 1024,
        wall_s,
    )


def invoke_job(
    job: str, params: Mapping[str, object], env: Mapping[str, str], log: Path
) -> Child:
    """`python -m housekeeper invoke JOB --param k=v ...` in its own process."""
    command = [sys.executable, "-m", "housekeeper", "invoke", job]
    for key, value in params.items():
        command += ["--param", f"{key}={value}"]
    child = run_child(command, env, stderr_path=log)
    if child.returncode != 0:
        raise RuntimeError(
            f"{job} exited {child.returncode}: {child.stdout[:500]} (see {log})"
        )
    return child


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of one measurement's runs."""
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": median(values), "min": min(values), "max": max(values)}


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; numbers right-aligned."""

    def cell(value: object) -> str:
        return str(value).replace("|", "\\|")

    numeric = [
        all(_is_number(row[i]) for row in rows if row[i] not in ("", "-"))
        for i in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(value: object) -> bool:
    text = str(value).replace(",", "").replace("x", "").replace("%", "").strip()
    try:
        float(text)
    except ValueError:
        return False
    return True


def fmt_int(value: float) -> str:
    """12,345 (or `-` for NaN)."""
    return "-" if value != value else f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    """0.83x (or `-` for NaN)."""
    return "-" if value != value else f"{value:.2f}x"


def fmt_ms(value: float) -> str:
    """A duration in ms, one decimal below 100."""
    if value != value:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _meminfo_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_type(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount, fstype = parts[1], parts[2]
            inside = str(path).startswith(mount.rstrip("/") + "/") or mount == "/"
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def machine(work_dir: Path) -> dict[str, Any]:
    """What the figures were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(_meminfo_gib(), 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "filesystem": filesystem_type(work_dir.resolve()),
        "load_average_at_start": [round(x, 2) for x in load],
        "find": shutil.which("find") or "missing",
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One line for the README."""
    return (
        f"{info['nproc']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB RAM, "
        f"Linux {info['kernel']}, {info['filesystem']}, Python {info['python']}"
    )


def small_database(data_dir: Path) -> Any:
    """A fresh embedded Postgres with the migrations and an empty log table.

    For the measurements whose database part must stay small: the sweep and
    the cold start.
    """
    import psycopg

    from devstack.migrate import apply_migrations
    from devstack.postgres import LocalPostgres

    shutil.rmtree(data_dir, ignore_errors=True)
    server = LocalPostgres(data_dir).start()
    apply_migrations(server.url)
    with psycopg.connect(server.url, autocommit=True) as connection:
        connection.execute(
            "create table if not exists public.logs (id bigserial primary key,"
            ' "timestamp" timestamptz, message text, context jsonb)'
        )
        connection.execute(
            'create index if not exists logs_timestamp_idx on public.logs ("timestamp")'
        )
    return server
