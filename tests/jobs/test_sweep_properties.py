"""Property: the sweep deletes exactly the expired matching regular files inside."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from housekeeper.jobs.sweep import sweep_folder

PATTERNS = ("*.log", "*.log.*")
NOW = time.time()
CUTOFF_S = NOW - 30 * 86400
CUTOFF = datetime.fromtimestamp(CUTOFF_S, UTC)
CUTOFF_NS = int(CUTOFF.timestamp()) * 10**9 + CUTOFF.microsecond * 1000

_NAMES = st.sampled_from(
    ["a.log", "b.log.1", "c.log.2026-01-01.gz", "d.txt", "log", "e.LOG", "f.log.x"]
)
_DIRS = st.lists(st.sampled_from(["x", "y", "z"]), max_size=3).map("/".join)
_AGE_NS = st.one_of(
    st.integers(-3000, 3000), st.integers(-(10**12), 10**12), st.just(0)
)
_ENTRY = st.tuples(
    _DIRS, _NAMES, _AGE_NS, st.sampled_from(["file", "file", "file", "link", "dirlink"])
)


def _build(root: Path, outside: Path, entries) -> set[str]:
    expected = set()
    for index, (folder, name, offset_ns, kind) in enumerate(entries):
        directory = root / folder if folder else root
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{index}-{name}"
        mtime_ns = CUTOFF_NS + offset_ns
        if kind == "file":
            path.write_bytes(b"x")
            os.utime(path, ns=(mtime_ns, mtime_ns))
            matches = name.endswith(".log") or ".log." in name
            if matches and mtime_ns < CUTOFF_NS:
                expected.add(str(path.relative_to(root)))
        else:
            target = outside / f"{index}-{name}"
            if kind == "dirlink":
                target.mkdir()
                inner = target / "inner.log"
                inner.write_bytes(b"x")
                os.utime(inner, ns=(mtime_ns, mtime_ns))
                path.symlink_to(target, target_is_directory=True)
            else:
                target.write_bytes(b"x")
                os.utime(target, ns=(mtime_ns, mtime_ns))
                path.symlink_to(target)
    return expected


def _files(root: Path) -> set[str]:
    found = set()
    for folder, _, names in os.walk(root):
        for name in names:
            found.add(str((Path(folder) / name).relative_to(root)))
    return found


@settings(max_examples=60, deadline=None)
@given(entries=st.lists(_ENTRY, max_size=25), dry_run=st.booleans())
def test_sweep_deletes_exactly_expired_matching_regular_files_inside(entries, dry_run):
    base = Path(tempfile.mkdtemp(prefix="sweep-property-"))
    try:
        root, outside = base / "logs", base / "outside"
        root.mkdir()
        outside.mkdir()
        expected = _build(root, outside, entries)
        outside_before = _files(outside)
        before = _files(root)

        report = sweep_folder(
            str(root), PATTERNS, CUTOFF, dry_run=dry_run, out_of_time=lambda: False
        )

        after = _files(root)
        assert _files(outside) == outside_before
        if dry_run:
            assert after == before
            assert report["would_delete_files"] == len(expected)
        else:
            assert before - after == expected
            assert report["deleted_files"] == len(expected)
        assert root.is_dir()
    finally:
        shutil.rmtree(base)
