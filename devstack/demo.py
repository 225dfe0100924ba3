"""Demo data: an application log table and a log folder, both months deep."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psycopg

DAY_S = 86400

# About 100,000 rows over 90 days: jsonb contexts of about 1 KB, one in 5,000
# about 100 KB, one in 997 with a NULL timestamp (kept by every purge).
LOG_TABLE_SQL = """
drop table if exists public.logs;
create table public.logs (
  id bigserial primary key,
  "timestamp" timestamptz default now(),
  level text not null,
  source text not null,
  message text not null,
  context jsonb
);
select setseed(0.42);
insert into public.logs ("timestamp", level, source, message, context)
select now() - random() * interval '90 days',
       (array['DEBUG', 'INFO', 'INFO', 'INFO', 'WARNING', 'ERROR'])[1 + g % 6],
       (array['api', 'worker', 'scheduler', 'scraper'])[1 + g % 4],
       'request ' || g || ' handled',
       jsonb_build_object(
         'request_id', md5(g::text),
         'path', '/api/items/' || (g % 1000),
         'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) demo',
         'payload', repeat(md5((g * 7)::text), 28))
from generate_series(1, {rows}) g;
update public.logs
   set context = context || jsonb_build_object('trace', repeat(md5(id::text), 3000))
 where id % 5000 = 0;
update public.logs set "timestamp" = null where id % 997 = 0;
create index if not exists logs_timestamp_idx on public.logs ("timestamp");
analyze public.logs;
"""


def seed_log_table(url: str, rows: int = 100_000) -> None:
    """(Re)create `public.logs` with the demo rows."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(LOG_TABLE_SQL.format(rows=int(rows)).encode())


def _write(path: Path, age_days: float, size: int, now: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    line = b"2026-01-01T00:00:00Z INFO demo line for the housekeeper sweep\n"
    path.write_bytes(line * max(1, size // len(line)))
    stamp = now - age_days * DAY_S
    os.utime(path, (stamp, stamp))


def seed_log_folder(folder: Path, outside: Path) -> None:
    """A log folder with nested rotated files of many ages, plus traps to keep.

    The traps: a fresh active file, a non-log file, and symlinks to a folder and
    a file outside the log folder, whose targets are old enough to delete.
    """
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)
    now = time.time()
    _write(folder / "app.log", 0, 64_000, now)
    for day in range(1, 61):
        _write(folder / f"app.log.{day}", day + 0.5, 8_000 + day * 100, now)
    for day in range(0, 90, 3):
        _write(folder / "worker" / f"worker.log.{day}.gz", day + 0.25, 4_000, now)
    for day in (1, 10, 35, 45, 80):
        _write(folder / "jobs" / "nightly" / f"cron-{day}.log", day, 2_000, now)
    _write(folder / "README.txt", 120, 500, now)
    _write(outside / "sentinel.log", 40, 500, now)
    _write(outside / "keep.log", 40, 500, now)
    (folder / "link").symlink_to(outside, target_is_directory=True)
    (folder / "f.log").symlink_to(outside / "keep.log")
