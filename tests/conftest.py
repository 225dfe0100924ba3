"""Shared fixtures: a real embedded Postgres, the targets in-process or emulated,
and a guard that fails any test whose logs or responses carry a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import functions_framework
import psycopg
import pytest

from devstack.emulator import FUNCTIONS_DIR, Emulator
from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres
from housekeeper.config import get_settings
from housekeeper.telemetry import register_secrets
from tests.support import SECRETS, TEST_SECRET, Call, Capture, Leaks, Reply


@pytest.fixture(autouse=True)
def leak_guard(request: pytest.FixtureRequest) -> Iterator[Leaks]:
    """Capture every housekeeper log line and response body; fail on a secret.

    A test adds its own secrets with `request.node.extra_secrets = (...)`,
    read at teardown so that the test body may set it.
    """
    leaks = Leaks([])
    handler = Capture(leaks)
    logger = logging.getLogger("housekeeper")
    logger.addHandler(handler)
    try:
        yield leaks
    finally:
        logger.removeHandler(handler)
    leaks.check(SECRETS + tuple(getattr(request.node, "extra_secrets", ())))


class _Records(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def log_records() -> Iterator[list[logging.LogRecord]]:
    """Every record of the housekeeper loggers during the test, as redacted.

    The housekeeper handler is first in line once configured, so these
    records are what its filter left.
    """
    records: list[logging.LogRecord] = []
    handler = _Records(records)
    logger = logging.getLogger("housekeeper")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """One embedded Postgres for the session, migrations applied."""
    server = LocalPostgres(tmp_path_factory.mktemp("pg"), fast=True).start()
    apply_migrations(server.url)
    try:
        yield server
    finally:
        server.stop(quiet=True)


@pytest.fixture
def conn(pg: LocalPostgres) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit superuser connection to the test database."""
    with psycopg.connect(pg.url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def clean_ledger(conn: psycopg.Connection[Any]) -> None:
    """Start with an empty run ledger."""
    conn.execute("truncate housekeeper.runs")


@pytest.fixture
def env(
    pg: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Settings for a run against the test database; change them via `set_env`."""
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    values = {
        "CRON_SECRET": TEST_SECRET,
        "DATABASE_URL": pg.url,
        "LOG_DIR": str(log_dir),
        "LOG_FORMAT": "text",
    }
    for name in (
        "CRON_SECRET_PREVIOUS",
        "SUPABASE_URL",
        "SUPABASE_SERVICE_ROLE_KEY",
        "LOGS_TABLE",
        "LOGS_TIMESTAMP_COLUMN",
        "RETENTION_DAYS",
        "TIME_BUDGET_S",
        "K_SERVICE",
    ):
        monkeypatch.delenv(name, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    register_secrets(SECRETS)
    return values


@pytest.fixture
def set_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> Callable[..., None]:
    """Change settings for this test: `set_env(RETENTION_DAYS="7")`, None unsets."""

    def apply(**values: str | None) -> None:
        for key, value in values.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
                env.pop(key, None)
            else:
                monkeypatch.setenv(key, value)
                env[key] = value
        get_settings()

    return apply


def _auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@pytest.fixture
def call(env: dict[str, str], leak_guard: Leaks) -> Call:
    """Call a target in-process through functions-framework's own app.

    `call("cleanup_logs", json={...})` sends the test secret; pass
    `headers={...}` to replace the Authorization header, `token=None` to omit it.
    """
    apps: dict[str, Any] = {}

    def do(
        target: str,
        *,
        method: str = "POST",
        json: Any = None,
        data: bytes | str | None = None,
        query: Mapping[str, str] | str | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = TEST_SECRET,
    ) -> Reply:
        if target not in apps:
            apps[target] = functions_framework.create_app(
                target, str(FUNCTIONS_DIR / "main.py")
            ).test_client()
        sent = {**_auth(token), **(headers or {})}
        response = apps[target].open(
            "/", method=method, json=json, data=data, query_string=query, headers=sent
        )
        reply = Reply(
            response.status_code, dict(response.headers), response.get_data(True)
        )
        leak_guard.add(reply.text)
        leak_guard.add(json_dumps(reply.headers))
        return reply

    return do


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=str)


@pytest.fixture
def emulator(
    env: dict[str, str], tmp_path: Path, leak_guard: Leaks
) -> Iterator[Callable[..., Emulator]]:
    """Start emulators for targets; their output is leak-checked at teardown."""
    started: list[Emulator] = []

    def start(target: str, **overrides: str) -> Emulator:
        log_path = tmp_path / f"emulator-{target}-{len(started)}.log"
        emu = Emulator(target, {**env, **overrides}, log_path=log_path).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()
        if emu.log_path and emu.log_path.exists():
            leak_guard.add(emu.log_path.read_text(errors="replace"))


@pytest.fixture(scope="session")
def r2_server() -> Iterator[Any]:
    """moto's S3 server on 127.0.0.1, standing in for R2 for the whole session."""
    from devstack.media_servers import MotoS3

    with MotoS3() as server:
        yield server


@pytest.fixture
def r2_env(r2_server: Any, pg: LocalPostgres, set_env: Callable[..., None]) -> Any:
    """What migrate-cdn-to-r2 needs to run: R2 settings on a new, empty bucket,
    and the default sources' tables, empty, with no item state.

    Returns the `R2Storage` of that bucket, for a test to look inside.
    """
    import uuid

    from devstack.media_demo import create_media_tables
    from housekeeper.media.storage import R2Storage

    storage = R2Storage(
        endpoint_url=r2_server.endpoint_url,
        access_key_id=r2_server.access_key_id,
        secret_access_key=r2_server.secret_access_key,
        bucket=f"media-{uuid.uuid4().hex[:12]}",
        public_url="https://media.example.test",
        max_attempts=1,
    )
    # R2's region is `auto`; moto wants it named as the bucket's location.
    storage.client.create_bucket(
        Bucket=storage.bucket, CreateBucketConfiguration={"LocationConstraint": "auto"}
    )
    create_media_tables(pg.url, reset=True)
    with psycopg.connect(pg.url, autocommit=True) as connection:
        connection.execute("truncate housekeeper.media_items")
    set_env(
        R2_ENDPOINT_URL=r2_server.endpoint_url,
        R2_ACCESS_KEY_ID=r2_server.access_key_id,
        R2_SECRET_ACCESS_KEY=r2_server.secret_access_key,
        R2_BUCKET=storage.bucket,
        R2_PUBLIC_URL=storage.public_base_url,
    )
    return storage
