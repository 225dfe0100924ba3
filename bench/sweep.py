"""Log folder sweep: the product's job against `find DIR -type f -mtime +N -delete`.

Each run sweeps a freshly written, identical tree (nested folders, a third
of the files expired). The tree lives in memory (/dev/shm, a tmpfs) where
there is one, as a function's only writable folder does on Cloud Functions;
elsewhere under the work folder, synced to disk first. The job's sweep time is its
response's duration_ms less the median duration_ms of the same job on an
empty folder (its database part: connection, run ledger, an empty purge).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import (
    filesystem_type,
    fmt_ratio,
    invoke_job,
    markdown_table,
    median,
    product_env,
    small_database,
    spread,
)

RETENTION_DAYS = 30
FILES_PER_FOLDER = 100
FILE_BYTES = 256
DAY_S = 86400


def _file_name(index: int) -> str:
    # Both kinds match the default LOG_FILE_PATTERNS (*.log, *.log.*).
    return f"app.log.{index}" if index % 2 else f"worker-{index}.log"


def write_tree(root: Path, files: int, now: float) -> int:
    """Write `files` files under svcNN/YYYY-MM/hostNN/; return how many expired.

    Every third file is 45 to 84 days old, the rest at most 24 days: far
    from the 30-day boundary, so `find -mtime +30` (whole days) and the
    job's exact cutoff pick the same files.
    """
    shutil.rmtree(root, ignore_errors=True)
    payload = b"x" * (FILE_BYTES - 1) + b"\n"
    expired = 0
    folder: Path | None = None
    for index in range(files):
        if index % FILES_PER_FOLDER == 0:
            leaf = index // FILES_PER_FOLDER
            folder = (
                root
                / f"svc{leaf % 10:02d}"
                / f"2026-{1 + leaf // 10 % 12:02d}"
                / f"host{leaf // 120:02d}"
            )
            folder.mkdir(parents=True, exist_ok=True)
        assert folder is not None
        path = folder / _file_name(index)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(descriptor, payload)
        finally:
            os.close(descriptor)
        if index % 3 == 0:
            age_days = 45 + index % 40
            expired += 1
        else:
            age_days = index % 25
        stamp = int((now - age_days * DAY_S - 3600) * 1e9)
        os.utime(path, ns=(stamp, stamp))
    return expired


def _tree_root(work_dir: Path) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"housekeeper-bench-{os.getpid()}" / "tree"
    return work_dir / "tree"


def count_files(root: Path) -> int:
    """Regular files left under `root`."""
    return sum(len(names) for _, _, names in os.walk(root))


def _bare_walk(dir_fd: int, cutoff_ns: int) -> None:
    with os.scandir(dir_fd) as listing:
        entries = list(listing)
    for entry in entries:
        if entry.is_file(follow_symlinks=False):
            if entry.stat(follow_symlinks=False).st_mtime_ns < cutoff_ns:
                os.unlink(entry.name, dir_fd=dir_fd)
        elif entry.is_dir(follow_symlinks=False):
            child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=dir_fd)
            try:
                _bare_walk(child, cutoff_ns)
            finally:
                os.close(child)


def _bare_python(root: Path) -> float:
    """The fewest Python lines that do what find does: the interpreter's floor.

    No patterns, no counters, no error handling; the same system calls as
    find (getdents, fstatat, unlinkat) and as the job.
    """
    cutoff_ns = time.time_ns() - (RETENTION_DAYS + 1) * DAY_S * 1_000_000_000
    started = time.perf_counter()
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _bare_walk(descriptor, cutoff_ns)
    finally:
        os.close(descriptor)
    return time.perf_counter() - started


def _find(root: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["find", str(root), "-type", "f", "-mtime", f"+{RETENTION_DAYS}", "-delete"],
        check=True,
    )
    return time.perf_counter() - started


def run(
    work_dir: Path, sizes: list[int], runs: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every size, `runs` times each approach, interleaved."""
    server = small_database(work_dir / "pg")
    empty = work_dir / "empty"
    tree = _tree_root(work_dir)
    job_log = work_dir / "job.log"
    results: dict[str, Any] = {"sizes": sizes, "runs": runs, "cases": []}
    tree.parent.mkdir(parents=True, exist_ok=True)
    results["filesystem"] = filesystem_type(tree.parent)
    try:
        empty.mkdir(parents=True, exist_ok=True)

        def job(folder: Path) -> dict[str, Any]:
            env = product_env(DATABASE_URL=server.url, LOG_DIR=str(folder))
            child = invoke_job(
                "cleanup-logs", {"retention_days": RETENTION_DAYS}, env, job_log
            )
            body: dict[str, Any] = child.json()
            return body

        # The first run of a process against a fresh server is slower than
        # the rest; it is not the job's database part.
        job(empty)
        for files in sizes:
            find_s: list[float] = []
            bare_s: list[float] = []
            job_ms: list[float] = []
            baseline_ms: list[float] = []
            correct = True
            for _ in range(runs):
                baseline_ms.append(float(job(empty)["duration_ms"]))

                expired = write_tree(tree, files, time.time())
                os.sync()
                find_s.append(_find(tree))
                correct &= count_files(tree) == files - expired

                expired = write_tree(tree, files, time.time())
                os.sync()
                bare_s.append(_bare_python(tree))
                correct &= count_files(tree) == files - expired

                expired = write_tree(tree, files, time.time())
                os.sync()
                body = job(tree)
                job_ms.append(float(body["duration_ms"]))
                swept = body["results"]["files"]
                correct &= swept["deleted_files"] == expired
                correct &= count_files(tree) == files - expired
            shutil.rmtree(tree, ignore_errors=True)

            database_ms = median(baseline_ms)
            sweep_s = [max(ms - database_ms, 0.0) / 1000 for ms in job_ms]
            case = {
                "files": files,
                "expired": expired,
                "find_s": spread(find_s),
                "bare_python_s": spread(bare_s),
                "job_total_s": spread([ms / 1000 for ms in job_ms]),
                "job_database_part_s": spread([ms / 1000 for ms in baseline_ms]),
                "job_sweep_s": spread(sweep_s),
                "correct": correct,
            }
            case["ratio_to_find"] = (
                case["job_sweep_s"]["median"] / case["find_s"]["median"]
            )
            case["total_ratio_to_find"] = (
                case["job_total_s"]["median"] / case["find_s"]["median"]
            )
            case["bare_ratio_to_find"] = (
                case["bare_python_s"]["median"] / case["find_s"]["median"]
            )
            results["cases"].append(case)
            log(
                f"  {files:,} files: find {case['find_s']['median']:.3f} s, "
                f"job sweep {case['job_sweep_s']['median']:.3f} s "
                f"({case['ratio_to_find']:.2f}x)"
            )
    finally:
        server.stop(quiet=True)
        shutil.rmtree(work_dir, ignore_errors=True)
        shutil.rmtree(tree.parent, ignore_errors=True)
    return results


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    """One table: both approaches per size, with the ratio."""
    rows = []
    for case in results["cases"]:
        rows.append(
            [
                f"{case['files']:,}",
                f"{case['expired']:,}",
                f"{case['find_s']['median']:.3f}",
                f"{case['job_sweep_s']['median']:.3f}",
                fmt_ratio(case["ratio_to_find"]),
                f"{case['bare_python_s']['median']:.3f} "
                f"({fmt_ratio(case['bare_ratio_to_find'])})",
                f"{case['job_total_s']['median']:.3f}",
                f"{case['job_database_part_s']['median']:.3f}",
                fmt_ratio(case["total_ratio_to_find"]),
                "yes" if case["correct"] else "NO",
            ]
        )
    title = (
        f"Log folder sweep: `find DIR -type f -mtime +{RETENTION_DAYS} -delete` "
        f"against cleanup-logs, on {results.get('filesystem', '?')} "
        f"(median of {results['runs']} runs)"
    )
    return [
        (
            title,
            markdown_table(
                [
                    "files",
                    "expired",
                    "find s",
                    "job sweep s",
                    "sweep vs find",
                    "bare Python loop s (vs find)",
                    "whole job s",
                    "job DB part s",
                    "whole job vs find",
                    "same files",
                ],
                rows,
            ),
        )
    ]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """At most 1.3x find on the largest folder."""
    case = max(results["cases"], key=lambda c: c["files"])
    ratio = case["ratio_to_find"]
    return [
        {
            "name": f"log folder sweep, {case['files']:,} files: time vs find",
            "target": "<= 1.30x",
            "measured": f"{ratio:.2f}x",
            "met": ratio <= 1.3 and case["correct"],
            "note": "",
        }
    ]
