"""Constants and helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

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
