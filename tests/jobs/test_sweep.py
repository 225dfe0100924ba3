"""The log-folder sweep: expired matching regular files inside the folder, only."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from housekeeper.jobs import sweep
from housekeeper.jobs.sweep import sweep_folder

DAY_S = 86400
PATTERNS = ("*.log", "*.log.*")
NOW = time.time()
CUTOFF = datetime.fromtimestamp(NOW - 30 * DAY_S, UTC)


def _file(path: Path, age_days: float, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = NOW - age_days * DAY_S
    os.utime(path, (stamp, stamp))
    return path


def _sweep(folder: Path, *, dry_run: bool = False, out_of_time=lambda: False):
    return sweep_folder(
        str(folder), PATTERNS, CUTOFF, dry_run=dry_run, out_of_time=out_of_time
    )


def test_symlinks_to_outside_files_and_folders_are_never_followed(tmp_path):
    logs, outside = tmp_path / "logs", tmp_path / "outside"
    logs.mkdir()
    sentinel = _file(outside / "sentinel.log", 40)
    keep = _file(outside / "keep.log", 40)
    (logs / "link").symlink_to(outside, target_is_directory=True)
    (logs / "f.log").symlink_to(keep)

    report = _sweep(logs)

    assert sentinel.exists()
    assert keep.exists()
    assert (logs / "link").is_symlink()
    assert (logs / "f.log").is_symlink()
    assert report["deleted_files"] == 0
    assert report["skipped"] == 2


def test_expired_matching_files_go_recursively_and_the_rest_stays(tmp_path):
    logs = tmp_path / "logs"
    old = [
        _file(logs / "app.log.3", 31, 100),
        _file(logs / "worker" / "worker.log", 45, 200),
        _file(logs / "a" / "b" / "c" / "deep.log.2026-01-01.gz", 90, 300),
    ]
    kept = [
        _file(logs / "app.log", 0),
        _file(logs / "app.log.1", 29.99),
        _file(logs / "notes.txt", 100),
        _file(logs / "worker" / "logfile", 100),
    ]
    report = _sweep(logs)
    assert report["deleted_files"] == 3
    assert report["deleted_bytes"] == 600
    assert report["kept_files"] == 2
    assert report["ignored_files"] == 2
    assert report["status"] == "success"
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in kept)
    assert logs.is_dir()
    assert (logs / "a" / "b" / "c").is_dir()


def test_file_modified_exactly_at_cutoff_is_kept_and_one_second_older_goes(tmp_path):
    logs = tmp_path / "logs"
    at_cutoff = _file(logs / "edge.log", 0)
    stamp = CUTOFF.timestamp()
    os.utime(at_cutoff, ns=(int(stamp * 1e9), round(stamp * 1e6) * 1000))
    older = _file(logs / "older.log", 0)
    os.utime(older, (stamp - 1, stamp - 1))
    _sweep(logs)
    assert at_cutoff.exists()
    assert not older.exists()


def test_dry_run_counts_and_deletes_nothing(tmp_path):
    logs = tmp_path / "logs"
    old = _file(logs / "old.log", 40, 50)
    report = _sweep(logs, dry_run=True)
    assert report["would_delete_files"] == 1
    assert report["would_delete_bytes"] == 50
    assert report["deleted_files"] == 0
    assert report["status"] == "dry_run"
    assert old.exists()


def test_a_file_that_refuses_deletion_is_counted_and_the_sweep_goes_on(
    tmp_path, monkeypatch
):
    logs = tmp_path / "logs"
    _file(logs / "a.log", 40)
    stubborn = _file(logs / "stubborn.log", 40)
    _file(logs / "z.log", 40)
    real_unlink = os.unlink

    def unlink(name, *, dir_fd=None):
        if name == "stubborn.log":
            raise PermissionError(1, "Operation not permitted")
        real_unlink(name, dir_fd=dir_fd)

    monkeypatch.setattr(sweep.os, "unlink", unlink)
    report = _sweep(logs)
    assert report["deleted_files"] == 2
    assert report["errors"] == 1
    assert report["error_samples"] == [
        {"path": "stubborn.log", "reason": "Operation not permitted"}
    ]
    assert stubborn.exists()


def test_a_file_that_vanishes_is_counted_and_the_sweep_goes_on(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    _file(logs / "gone.log", 40)
    _file(logs / "other.log", 40)
    real_unlink = os.unlink

    def unlink(name, *, dir_fd=None):
        real_unlink(name, dir_fd=dir_fd)
        if name == "gone.log":
            raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(sweep.os, "unlink", unlink)
    report = _sweep(logs)
    assert report["errors"] == 1
    assert report["deleted_files"] == 1
    assert report["error_samples"][0]["reason"] == "vanished before it could be deleted"


def test_fifo_and_other_special_files_are_skipped(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    os.mkfifo(logs / "pipe.log")
    stamp = NOW - 40 * DAY_S
    os.utime(logs / "pipe.log", (stamp, stamp))
    report = _sweep(logs)
    assert report["skipped"] == 1
    assert (logs / "pipe.log").exists()


def test_missing_folder_is_reported_not_failed(tmp_path):
    report = _sweep(tmp_path / "absent")
    assert report["status"] == "missing"


def test_folder_that_is_itself_a_symlink_is_refused(tmp_path):
    real = tmp_path / "real"
    _file(real / "old.log", 40)
    (tmp_path / "logs").symlink_to(real, target_is_directory=True)
    report = _sweep(tmp_path / "logs")
    assert report["status"] == "refused"
    assert (real / "old.log").exists()


def test_empty_log_dir_setting_disables_the_sweep():
    report = sweep_folder(
        "", PATTERNS, CUTOFF, dry_run=False, out_of_time=lambda: False
    )
    assert report["status"] == "disabled"


def test_time_budget_stops_the_sweep_with_partial(tmp_path):
    logs = tmp_path / "logs"
    for index in range(1100):
        _file(logs / f"f{index}.log", 40)
    report = _sweep(logs, out_of_time=lambda: True)
    assert report["status"] == "partial"
    assert 0 < report["deleted_files"] < 1100


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("app.log", True),
        ("app.log.1", True),
        ("app.log.2026-01-01.gz", True),
        ("app.txt", False),
        ("catalog", False),
        ("log", False),
        (".log", True),
    ],
)
def test_default_patterns(name, matches):
    assert bool(sweep.compile_patterns(PATTERNS).match(name)) is matches


def test_trailing_slash_does_not_let_a_symlinked_folder_through(tmp_path):
    real = tmp_path / "real"
    old = _file(real / "old.log", 40)
    (tmp_path / "logs").symlink_to(real, target_is_directory=True)
    folder = str(tmp_path / "logs") + "/"
    report = sweep_folder(
        folder, PATTERNS, CUTOFF, dry_run=False, out_of_time=lambda: False
    )
    assert report["status"] == "refused"
    assert old.exists()


def test_root_folder_is_refused(tmp_path):
    report = sweep_folder(
        "/", PATTERNS, CUTOFF, dry_run=True, out_of_time=lambda: False
    )
    assert report["status"] == "refused"
