"""Delete expired log files from a folder, never through a symlink.

The walk holds a file descriptor for each directory on its path and works
relative to it (`openat`/`unlinkat` semantics), so a directory swapped for a
symlink while the sweep runs cannot lead it outside the folder.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

logger = logging.getLogger(__name__)

MAX_DEPTH = 64
MAX_ERROR_SAMPLES = 10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression matching any of the shell-style name patterns."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _ns(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (
        delta.days * 86400 + delta.seconds
    ) * 1_000_000_000 + delta.microseconds * 1000


@dataclass
class _Sweep:
    pattern: re.Pattern[str]
    cutoff_ns: int
    dry_run: bool
    out_of_time: Callable[[], bool]
    deleted_files: int = 0
    deleted_bytes: int = 0
    kept_files: int = 0
    ignored_files: int = 0
    skipped: int = 0
    errors: int = 0
    error_samples: list[dict[str, str]] = field(default_factory=list)
    stopped: bool = False
    seen: int = 0
    device: int = -1

    def error(self, path: str, exc: OSError | str) -> None:
        self.errors += 1
        reason = exc if isinstance(exc, str) else (exc.strerror or type(exc).__name__)
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append({"path": path, "reason": reason})
        logger.warning("log sweep: %s: %s", path, reason)

    def walk(self, dir_fd: int, prefix: str, depth: int) -> None:
        try:
            with os.scandir(dir_fd) as listing:
                entries = list(listing)
        except OSError as exc:
            self.error(prefix or ".", exc)
            return
        # This loop runs once per file, so it is kept lean: the checks a
        # regular file needs come first, answered from the listing's d_type
        # without a system call; counters are local until the folder is
        # done; a path string is made only for an error or a subfolder.
        match = self.pattern.match
        cutoff_ns, dry_run = self.cutoff_ns, self.dry_run
        deleted = deleted_bytes = kept = ignored = skipped = 0
        try:
            for entry in entries:
                self.seen += 1
                if self.seen % 512 == 0 and self.out_of_time():
                    self.stopped = True
                if self.stopped:
                    return
                name = entry.name
                try:
                    # Never true for a symlink: follow_symlinks=False.
                    if entry.is_file(follow_symlinks=False):
                        if not match(name):
                            ignored += 1
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            self.error(
                                prefix + name, "vanished before it could be checked"
                            )
                            continue
                        if not stat.S_ISREG(info.st_mode):
                            skipped += 1
                        elif info.st_mtime_ns >= cutoff_ns:
                            kept += 1
                        else:
                            if not dry_run:
                                try:
                                    os.unlink(name, dir_fd=dir_fd)
                                except FileNotFoundError:
                                    self.error(
                                        prefix + name,
                                        "vanished before it could be deleted",
                                    )
                                    continue
                            deleted += 1
                            deleted_bytes += info.st_size
                    elif entry.is_dir(follow_symlinks=False):
                        self.descend(dir_fd, name, prefix + name, depth)
                    else:
                        # Symlinks, FIFOs, sockets, devices.
                        skipped += 1
                except OSError as exc:
                    self.error(prefix + name, exc)
        finally:
            self.deleted_files += deleted
            self.deleted_bytes += deleted_bytes
            self.kept_files += kept
            self.ignored_files += ignored
            self.skipped += skipped

    def descend(self, dir_fd: int, name: str, path: str, depth: int) -> None:
        if depth >= MAX_DEPTH:
            self.skipped += 1
            return
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            # ELOOP/ENOTDIR: it became a symlink or a file since it was listed.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self.skipped += 1
            else:
                self.error(path, exc)
            return
        try:
            # Like `find -xdev`: a filesystem mounted inside the folder is not
            # the folder's to clean.
            if os.fstat(child).st_dev != self.device:
                self.skipped += 1
                return
            self.walk(child, path + "/", depth + 1)
        finally:
            os.close(child)


def sweep_folder(
    folder: str,
    patterns: Iterable[str],
    cutoff: datetime,
    *,
    dry_run: bool,
    out_of_time: Callable[[], bool],
) -> dict[str, Any]:
    """Delete regular files under `folder` matching `patterns`, older than `cutoff`."""
    report: dict[str, Any] = {"folder": folder, "cutoff": cutoff.isoformat()}
    if not folder:
        return {**report, "status": "disabled", "message": "LOG_DIR is empty"}
    # A trailing slash would make the kernel follow a symlinked folder.
    path = folder.rstrip("/")
    if not path or os.path.realpath(path) == "/":
        logger.warning("log sweep refused: LOG_DIR names the root folder")
        return {**report, "status": "refused", "message": "LOG_DIR is the root folder"}
    try:
        root = os.open(path, _DIR_FLAGS)
    except OSError as exc:
        logger.warning("log sweep skipped: %s: %s", path, exc.strerror)
        if exc.errno == errno.ENOENT:
            return {
                **report,
                "status": "missing",
                "message": "the folder does not exist",
            }
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return {
                **report,
                "status": "refused",
                "message": "the folder is a symlink or not a directory; "
                "name the real folder in LOG_DIR",
            }
        return {**report, "status": "failed", "message": exc.strerror or str(exc)}

    sweep = _Sweep(compile_patterns(patterns), _ns(cutoff), dry_run, out_of_time)
    sweep.device = os.fstat(root).st_dev
    try:
        sweep.walk(root, "", 0)
    finally:
        os.close(root)

    status = "partial" if sweep.stopped else ("dry_run" if dry_run else "success")
    counts = {
        "deleted_files": sweep.deleted_files,
        "deleted_bytes": sweep.deleted_bytes,
    }
    if dry_run:
        counts = {
            "deleted_files": 0,
            "deleted_bytes": 0,
            "would_delete_files": sweep.deleted_files,
            "would_delete_bytes": sweep.deleted_bytes,
        }
    return {
        **report,
        **counts,
        "kept_files": sweep.kept_files,
        "ignored_files": sweep.ignored_files,
        "skipped": sweep.skipped,
        "errors": sweep.errors,
        "error_samples": sweep.error_samples,
        "status": status,
    }
