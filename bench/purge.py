"""Purge of a log table: the product's job against a raw DELETE and the original loop.

Every run gets a fresh file-level copy (`CREATE DATABASE ... TEMPLATE ...
STRATEGY FILE_COPY`) of a template database built once per size with a fixed
seed and VACUUM (FREEZE, ANALYZE)d, then a CHECKPOINT and a sync, so that each
approach starts from byte-identical tables and the same checkpoint state.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.common import (
    fmt_int,
    fmt_ms,
    fmt_ratio,
    invoke_job,
    markdown_table,
    median,
    product_env,
    spread,
)
from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres

# The server's durability settings are Postgres's defaults, the same for all
# three approaches: fsync, full_page_writes and synchronous_commit on. Only
# what keeps one run from leaking into the next is changed: no autovacuum (a
# vacuum of the previous run's dead rows would land inside the next one), and
# checkpoints only when the benchmark asks for them (before every run), not
# in the middle of one because WAL reached the default 1 GB max_wal_size.
SERVER_SETTINGS = {
    "autovacuum": "off",
    "max_wal_size": "'16GB'",
    "checkpoint_timeout": "'1h'",
    # Every statement over 100 ms is logged with its client's name, so each
    # approach's transactions over the target can be counted, not only the
    # longest one.
    "log_min_duration_statement": "100",
    "log_line_prefix": "'%m [%p] app=%a '",
}
SLOW_MS = 100
_SLOW_LINE = re.compile(r"app=(\S*) LOG:  duration: ([0-9.]+) ms  (.*)")
# Which logged statements are an approach's transactions.
_TRANSACTION_MARKS = {
    "raw": ("bench-raw", "delete from"),
    "peer": ("bench-peer", "delete from"),
    "product": ("housekeeper", "housekeeper_purge_batch"),
}

# Rows span 300 days, oldest first, as an append-only log table is written.
# Retention 100 days leaves two thirds expired (a backlog); 291 days, 3% (the
# steady state of a daily run).
SPAN_DAYS = 300
SCENARIOS = (("backlog", 100, 2 / 3), ("steady", 291, 0.03))

# jsonb contexts of about 2 KB as text (about 1.5 KB stored, compressed in line):
# ids and hashes that do not compress, headers and a stack trace that do.
TABLE_SQL = """
create table public.logs (
  id bigserial primary key,
  "timestamp" timestamptz,
  level text not null,
  source text not null,
  message text not null,
  context jsonb
);
select setseed(0.7);
insert into public.logs ("timestamp", level, source, message, context)
select now() - interval '{span} days' * (1 - g::float8 / {rows})
         + random() * interval '1 minute',
       (array['DEBUG', 'INFO', 'INFO', 'INFO', 'WARNING', 'ERROR'])[1 + g % 6],
       (array['api', 'worker', 'scheduler', 'scraper'])[1 + g % 4],
       'request ' || g || ' handled in ' || (random() * 900)::int || ' ms',
       jsonb_build_object(
         'request_id', md5(g::text),
         'trace_id', md5((g * 31)::text) || md5((g * 37)::text),
         'user_id', (random() * 100000)::int,
         'method', (array['GET', 'POST', 'PUT', 'DELETE'])[1 + g % 4],
         'path', '/api/v1/items/' || (g % 5000) || '/comments',
         'status', (array[200, 200, 200, 201, 204, 400, 404, 500])[1 + g % 8],
         'duration_ms', round((random() * 900)::numeric, 2),
         'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
                       '(KHTML, like Gecko) Chrome/131.0 Safari/537.36',
         'headers', jsonb_build_object(
           'accept', 'application/json',
           'x-forwarded-for', '203.0.113.' || (g % 250),
           'x-request-start', g),
         'stack', (select string_agg(format(
                     '  File "/srv/app/%s.py", line %s, in handler_%s',
                     md5((g * k)::text), (random() * 900)::int, k), E'\\n')
                   from generate_series(1, 18) k),
         'payload', encode(sha256(g::text::bytea), 'base64')
                    || encode(sha256((g + 1)::text::bytea), 'base64')
                    || encode(sha256((g + 2)::text::bytea), 'base64'))
from generate_series(1, {rows}) g;
create index logs_timestamp_idx on public.logs ("timestamp");
"""

APPROACHES = ("raw", "product", "peer")
LABELS = {
    "raw": "raw DELETE (limit)",
    "product": "housekeeper cleanup-logs",
    "peer": "original: 1000 ids, delete by id list",
}
PEER_BATCH = 1000
RUN_DB = "bench_run"


@dataclass
class Outcome:
    """One run of one approach."""

    deleted: int
    seconds: float
    longest_ms: float
    batches: int
    max_rss_mb: float | None = None
    job_seconds: float | None = None
    slow_ms: list[float] = field(default_factory=list)
    expected: int | None = None
    remaining_expired: int | None = None

    @property
    def correct(self) -> bool:
        return self.deleted == self.expected and self.remaining_expired == 0


def _raw(url: str, retention_days: int, _: Path) -> tuple[Outcome, datetime]:
    with psycopg.connect(
        url, autocommit=True, application_name="bench-raw"
    ) as connection:
        cutoff = connection.execute(
            "select now() - make_interval(days => %s)", (retention_days,)
        ).fetchone()[0]
        started = time.perf_counter()
        deleted = connection.execute(
            'delete from public.logs where "timestamp" < %s', (cutoff,)
        ).rowcount
        seconds = time.perf_counter() - started
    return Outcome(deleted, seconds, seconds * 1000, 1), cutoff


def _peer(url: str, retention_days: int, _: Path) -> tuple[Outcome, datetime]:
    # The original job: a cutoff computed once, then "select 1000 ids oldest
    # first, delete them by id list" until nothing is left. Each statement is
    # its own transaction, as each was its own REST call.
    deleted = batches = 0
    longest_s = 0.0
    with psycopg.connect(
        url, autocommit=True, application_name="bench-peer"
    ) as connection:
        cutoff = connection.execute(
            "select now() - make_interval(days => %s)", (retention_days,)
        ).fetchone()[0]
        started = time.perf_counter()
        while True:
            ids = [
                row[0]
                for row in connection.execute(
                    'select id from public.logs where "timestamp" < %s'
                    ' order by "timestamp" limit %s',
                    (cutoff, PEER_BATCH),
                )
            ]
            if not ids:
                break
            batch_started = time.perf_counter()
            deleted += connection.execute(
                "delete from public.logs where id = any(%s)", (ids,)
            ).rowcount
            longest_s = max(longest_s, time.perf_counter() - batch_started)
            batches += 1
        seconds = time.perf_counter() - started
    return Outcome(deleted, seconds, longest_s * 1000, batches), cutoff


def _product(url: str, retention_days: int, log: Path) -> tuple[Outcome, datetime]:
    env = product_env(DATABASE_URL=url, LOG_DIR="")
    child = invoke_job("cleanup-logs", {"retention_days": retention_days}, env, log)
    body = child.json()
    database = body["results"]["database"]
    if database.get("status") != "success":
        raise RuntimeError(f"cleanup-logs did not finish its purge: {database}")
    outcome = Outcome(
        deleted=database["deleted"],
        # The purge's own time (the batches, on an open connection) is what
        # compares with the raw DELETE; the whole job adds the driver import,
        # the connection and the run ledger.
        seconds=database["elapsed_ms"] / 1000,
        job_seconds=body["duration_ms"] / 1000,
        longest_ms=float(database["longest_batch_ms"]),
        batches=database["batches"],
        max_rss_mb=child.max_rss_mb,
    )
    return outcome, datetime.fromisoformat(database["cutoff"])


RUNNERS: dict[str, Callable[[str, int, Path], tuple[Outcome, datetime]]] = {
    "raw": _raw,
    "peer": _peer,
    "product": _product,
}


class PurgeBench:
    """An embedded Postgres of its own, one template database per table size."""

    def __init__(self, work_dir: Path, log: Callable[[str], None]) -> None:
        self.work_dir = work_dir
        self.log = log
        self.pg = LocalPostgres(work_dir / "pg")
        self.templates: dict[int, dict[str, Any]] = {}

    def start(self) -> None:
        shutil.rmtree(self.pg.data_dir, ignore_errors=True)
        self.pg.start()
        statements = "".join(
            f"alter system set {name} = {value};\n"
            for name, value in SERVER_SETTINGS.items()
        )
        self.pg.psql(statements)
        self.pg.stop()
        self.pg.start()

    def stop(self, *, keep: bool = False) -> None:
        self.pg.stop(quiet=True)
        if not keep:
            shutil.rmtree(self.pg.data_dir, ignore_errors=True)

    def url(self, database: str) -> str:
        return self.pg.url_for("postgres", db=database)

    def server_settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_sync_method",
            "shared_buffers",
            "max_wal_size",
            "autovacuum",
        )
        with psycopg.connect(self.pg.url, autocommit=True) as connection:
            return {
                name: str(connection.execute(f"show {name}").fetchone()[0])
                for name in names
            }

    def build_template(self, rows: int) -> dict[str, Any]:
        name = f"bench_template_{rows}"
        started = time.perf_counter()
        with psycopg.connect(self.pg.url, autocommit=True) as connection:
            connection.execute(f"drop database if exists {name}")
            connection.execute(f"create database {name}")
        apply_migrations(self.url(name))
        with psycopg.connect(self.url(name), autocommit=True) as connection:
            connection.execute(
                TABLE_SQL.format(rows=int(rows), span=SPAN_DAYS).encode()
            )
            connection.execute("vacuum (freeze, analyze) public.logs")
            size = connection.execute(
                "select pg_total_relation_size('public.logs'),"
                " avg(octet_length(context::text)), avg(pg_column_size(context))"
                " from public.logs"
            ).fetchone()
        info = {
            "database": name,
            "rows": rows,
            "total_bytes": int(size[0]),
            "context_text_bytes": round(float(size[1])),
            "context_stored_bytes": round(float(size[2])),
            "build_s": round(time.perf_counter() - started, 1),
        }
        self.templates[rows] = info
        return info

    def expected(self, rows: int, cutoff: datetime) -> int:
        """Rows of the template strictly older than `cutoff`."""
        template = self.templates[rows]["database"]
        with psycopg.connect(self.url(template), autocommit=True) as connection:
            return int(
                connection.execute(
                    'select count(*) from public.logs where "timestamp" < %s',
                    (cutoff,),
                ).fetchone()[0]
            )

    def fresh_copy(self, rows: int) -> str:
        template = self.templates[rows]["database"]
        with psycopg.connect(self.pg.url, autocommit=True) as connection:
            connection.execute(f"drop database if exists {RUN_DB}")
            connection.execute(
                f"create database {RUN_DB} template {template} strategy file_copy"
            )
            connection.execute("checkpoint")
        os.sync()
        return self.url(RUN_DB)

    def server_log(self) -> Path:
        return self.pg.data_dir / "pgdata" / "server.log"

    def slow_statements(self, approach: str, offset: int) -> list[float]:
        """Durations (ms) of this approach's logged transactions past `offset`."""
        app, mark = _TRANSACTION_MARKS[approach]
        with open(self.server_log(), "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        found = []
        for match in _SLOW_LINE.finditer(text):
            name, duration, statement = match.groups()
            if name == app and mark in statement.lower():
                found.append(float(duration))
        return found

    def run_once(self, approach: str, rows: int, retention_days: int) -> Outcome:
        url = self.fresh_copy(rows)
        log = self.work_dir / f"{approach}.log"
        offset = self.server_log().stat().st_size
        outcome, cutoff = RUNNERS[approach](url, retention_days, log)
        outcome.slow_ms = self.slow_statements(approach, offset)
        with psycopg.connect(url, autocommit=True) as connection:
            outcome.remaining_expired = int(
                connection.execute(
                    'select count(*) from public.logs where "timestamp" < %s',
                    (cutoff,),
                ).fetchone()[0]
            )
            remaining = int(
                connection.execute("select count(*) from public.logs").fetchone()[0]
            )
        outcome.expected = self.expected(rows, cutoff)
        if remaining != rows - outcome.deleted:
            outcome.expected = -1
        with psycopg.connect(self.pg.url, autocommit=True) as connection:
            connection.execute(f"drop database {RUN_DB}")
        return outcome


def run(
    work_dir: Path,
    sizes: list[int],
    runs: int,
    log: Callable[[str], None],
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """Every size and scenario, `runs` times each approach, interleaved."""
    bench = PurgeBench(work_dir, log)
    bench.start()
    results: dict[str, Any] = {"sizes": sizes, "runs": runs, "cases": []}
    try:
        results["server"] = bench.server_settings()
        results["tables"] = []
        for rows in sizes:
            info = bench.build_template(rows)
            results["tables"].append(info)
            log(
                f"  template {rows:,} rows: {info['total_bytes'] / 2**20:,.0f} MB "
                f"in {info['build_s']} s"
            )
            for scenario, retention_days, share in SCENARIOS:
                outcomes: dict[str, list[Outcome]] = {a: [] for a in APPROACHES}
                for _ in range(runs):
                    for approach in APPROACHES:
                        outcomes[approach].append(
                            bench.run_once(approach, rows, retention_days)
                        )
                case = _summarise(rows, scenario, retention_days, share, outcomes)
                results["cases"].append(case)
                log(
                    f"  {rows:,} rows, {scenario}: "
                    + ", ".join(
                        f"{a} {case['approaches'][a]['rows_per_s']['median']:,.0f}/s"
                        for a in APPROACHES
                    )
                )
    finally:
        bench.stop(keep=keep)
    return results


def _summarise(
    rows: int,
    scenario: str,
    retention_days: int,
    share: float,
    outcomes: dict[str, list[Outcome]],
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "rows": rows,
        "scenario": scenario,
        "retention_days": retention_days,
        "expired_share": share,
        "approaches": {},
    }
    for approach, runs in outcomes.items():
        summary["approaches"][approach] = {
            "deleted": [o.deleted for o in runs],
            "seconds": spread([o.seconds for o in runs]),
            "rows_per_s": spread([o.deleted / o.seconds for o in runs]),
            "longest_transaction_ms": spread([o.longest_ms for o in runs]),
            "longest_transaction_ms_max": max(o.longest_ms for o in runs),
            "transactions_total": sum(o.batches for o in runs),
            "transactions_over_100ms": sum(len(o.slow_ms) for o in runs),
            "slow_statements_ms": sorted(ms for o in runs for ms in o.slow_ms),
            "batches": median([o.batches for o in runs]),
            "job_seconds": (
                spread([o.job_seconds for o in runs if o.job_seconds is not None])
                if runs[0].job_seconds is not None
                else None
            ),
            "max_rss_mb": (
                spread([o.max_rss_mb for o in runs if o.max_rss_mb is not None])
                if runs[0].max_rss_mb is not None
                else None
            ),
            "correct": all(o.correct for o in runs),
        }
    raw_s = summary["approaches"]["raw"]["seconds"]["median"]
    for approach in outcomes:
        entry = summary["approaches"][approach]
        entry["time_ratio_to_raw"] = entry["seconds"]["median"] / raw_s
        entry["throughput_ratio_to_raw"] = raw_s / entry["seconds"]["median"]
        if entry["job_seconds"] is not None:
            entry["job_time_ratio_to_raw"] = entry["job_seconds"]["median"] / raw_s
    return summary


def tables(results: dict[str, Any]) -> list[tuple[str, str]]:
    """One Markdown table per scenario: (title, table)."""
    out = []
    sizes = {t["rows"]: t for t in results["tables"]}
    for scenario, retention_days, share in SCENARIOS:
        rows_out = []
        for case in results["cases"]:
            if case["scenario"] != scenario:
                continue
            table = sizes[case["rows"]]
            for approach in APPROACHES:
                entry = case["approaches"][approach]
                rss = entry["max_rss_mb"]
                job = entry["job_seconds"]
                rows_out.append(
                    [
                        f"{case['rows']:,} ({table['total_bytes'] / 2**20:,.0f} MB)",
                        LABELS[approach],
                        fmt_int(median(entry["deleted"])),
                        f"{entry['seconds']['median']:.3f}",
                        fmt_int(entry["rows_per_s"]["median"]),
                        fmt_ratio(entry["throughput_ratio_to_raw"]),
                        fmt_ratio(entry["time_ratio_to_raw"]),
                        "-"
                        if job is None
                        else f"{job['median']:.3f} "
                        f"({fmt_ratio(entry['job_time_ratio_to_raw'])})",
                        fmt_ms(entry["longest_transaction_ms_max"]),
                        f"{entry['transactions_over_100ms']} of "
                        f"{entry['transactions_total']:,}",
                        fmt_int(entry["batches"]),
                        "-" if rss is None else f"{rss['max']:.0f}",
                        "yes" if entry["correct"] else "NO",
                    ]
                )
        title = (
            f"Purge, {scenario}: {share:.0%} of the rows older than "
            f"{retention_days} days (median of {results['runs']} runs)"
        )
        out.append(
            (
                title,
                markdown_table(
                    [
                        "rows (size)",
                        "approach",
                        "deleted",
                        "time s",
                        "rows/s",
                        "throughput vs raw",
                        "time vs raw",
                        "whole job s (vs raw)",
                        "longest txn ms",
                        f"txns > {SLOW_MS} ms (all runs)",
                        "txns",
                        "peak RSS MB",
                        "exact",
                    ],
                    rows_out,
                ),
            )
        )
    return out
