"""Constants and helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# Realistic secrets, with the characters that break naive handling.
TEST_SECRET = "hk-test-Secr3t+/=value-0d1f"
TEST_PREVIOUS_SECRET = "hk-old-Secr3t-value-77aa"
SECRETS = (TEST_SECRET, TEST_PREVIOUS_SECRET)


@dataclass
class Leaks:
    """Everything a test produced that a secret must never appear in."""

    texts: list[str]

    def add(self, text: str) -> None:
        self.texts.append(text)

    def check(self, secrets: tuple[str, ...]) -> None:
        for text in self.texts:
            for secret in secrets:
                assert secret not in text, f"a secret leaked into: {text[:300]!r}"


class Capture(logging.Handler):
    def __init__(self, leaks: Leaks) -> None:
        super().__init__(logging.DEBUG)
        self.leaks = leaks
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.leaks.add(self.format(record))


@dataclass
class Reply:
    """A target's answer, decoded."""

    status: int
    headers: Mapping[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


Call = Callable[..., Reply]


def create_log_table(
    conn: psycopg.Connection[Any],
    name: str = "logs",
    *,
    column: str = "timestamp",
    column_type: str = "timestamptz",
    index: bool = True,
) -> None:
    """(Re)create a log table shaped like the application's."""
    conn.execute(f'drop table if exists public."{name}" cascade')
    conn.execute(
        f'create table public."{name}" (id bigserial primary key, "{column}" '
        f"{column_type}, message text, context jsonb)"
    )
    if index:
        conn.execute(f'create index on public."{name}" ("{column}")')


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float = 20.0, what: str = "condition"
) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail after timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)


@contextmanager
def table_lock(url: str, table: str = "logs") -> Iterator[psycopg.Connection[Any]]:
    """Hold a SHARE lock on `table`: reads go on, any DELETE waits until the exit.

    A run blocked this way is deterministically "in the middle": it holds the
    run lock and has not finished. The connection is yielded so that a test
    may release early with `commit()`.
    """
    with psycopg.connect(url) as connection:
        connection.execute(f'lock table public."{table}" in share mode')
        try:
            yield connection
        finally:
            connection.commit()


def insert_run(
    conn: psycopg.Connection[Any],
    *,
    job: str = "cleanup-logs",
    status: str = "success",
    trigger: str = "manual",
    started_ago: timedelta = timedelta(minutes=5),
    duration: timedelta = timedelta(seconds=3),
    lease: timedelta = timedelta(minutes=11),
    scheduler_job: str | None = None,
    schedule_time: datetime | None = None,
    counts: Mapping[str, Any] | None = None,
    error: str | None = None,
) -> str:
    """A ledger row with times relative to the database's clock; its run id."""
    run_id = str(uuid.uuid4())
    conn.execute(
        "insert into housekeeper.runs (run_id, job, trigger, scheduler_job,"
        " schedule_time, status, started_at, lease_expires_at, finished_at, counts,"
        " error) values (%(run_id)s, %(job)s, %(trigger)s, %(scheduler_job)s,"
        " %(schedule_time)s, %(status)s, now() - %(started_ago)s,"
        " now() - %(started_ago)s + %(lease)s,"
        " case when %(status)s = 'running' then null"
        "  else now() - %(started_ago)s + %(duration)s end,"
        " %(counts)s, %(error)s)",
        {
            "run_id": run_id,
            "job": job,
            "trigger": trigger,
            "scheduler_job": scheduler_job,
            "schedule_time": schedule_time,
            "status": status,
            "started_ago": started_ago,
            "lease": lease,
            "duration": duration,
            "counts": Jsonb(dict(counts or {})),
            "error": error,
        },
    )
    return run_id


def ledger(
    conn: psycopg.Connection[Any], job: str | None = None
) -> list[dict[str, Any]]:
    """Every ledger row (of `job`), oldest first."""
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "select run_id::text, job, trigger, scheduler_job, schedule_time, status,"
            " started_at, lease_expires_at, finished_at, counts, error"
            " from housekeeper.runs where %(job)s::text is null or job = %(job)s"
            " order by started_at",
            {"job": job},
        ).fetchall()


class FakeJob:
    """A job for `runs.execute` that does what the test hands it."""

    def __init__(self, work: Callable[[Any], Any]) -> None:
        self.work = work

    def parse_params(self, params: Any, settings: Any) -> None:
        return None

    def run(self, ctx: Any, params: None) -> Any:
        return self.work(ctx)


def run_fake_job(
    job: FakeJob, leak_guard: Leaks, headers: Mapping[str, str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Run `job` as cleanup-logs through `execute`; the answer and its JSON body."""
    from housekeeper.config import get_settings
    from housekeeper.http import Params, error_response, json_response
    from housekeeper.runs import execute
    from housekeeper.telemetry import configure

    settings = get_settings()
    configure(settings)
    answer = execute("cleanup-logs", job, Params({}), headers or {}, settings)
    if answer.error is not None:
        response = error_response(answer.error, extra=answer.body)
    else:
        response = json_response(answer.body, answer.status)
    text = response.get_data(as_text=True)
    leak_guard.add(text)
    return answer, json.loads(text)
