"""Fixtures for the database transports: the PostgREST stand-in and its keys."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.migrate import MIGRATIONS_DIR, apply_migrations
from devstack.postgres import LocalPostgres
from housekeeper.config import load_settings
from housekeeper.db.base import LOG_PURGE_MIGRATION
from housekeeper.db.postgres import PostgresDatabase
from housekeeper.db.supabase import SupabaseDatabase
from tests.postgrest_standin import PostgrestStandIn
from tests.support import Leaks

# The pretend project's JWT secret: long enough for HS256 without a warning.
JWT_SECRET = "standin-jwt-secret-for-the-tests-only-7f3c9a1e5b"


@dataclass
class Project:
    """A pretend Supabase project: its stand-in and its two API keys."""

    standin: PostgrestStandIn
    service_key: str
    anon_key: str

    @property
    def url(self) -> str:
        return self.standin.url

    def settings_env(self, **overrides: str) -> dict[str, str]:
        return {
            "SUPABASE_URL": self.url,
            "SUPABASE_SERVICE_ROLE_KEY": self.service_key,
            "SUPABASE_READ_TIMEOUT_S": "10",
            **overrides,
        }


def _project(database_url: str, leak_guard: Leaks) -> Iterator[Project]:
    standin = PostgrestStandIn(database_url, JWT_SECRET).start()
    project = Project(standin, standin.key("service_role"), standin.key("anon"))
    try:
        yield project
    finally:
        standin.stop()
        # Neither key may reach a log line or a response body.
        leak_guard.check((project.service_key, project.anon_key))


@pytest.fixture
def project(pg: LocalPostgres, leak_guard: Leaks) -> Iterator[Project]:
    """A stand-in Supabase project over the test database (migrations applied)."""
    yield from _project(pg.url, leak_guard)


@pytest.fixture(scope="session")
def partial_database(
    pg: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A database with only the log purge migration: the run ledger is missing."""
    only = tmp_path_factory.mktemp("migrations")
    shutil.copy(MIGRATIONS_DIR / LOG_PURGE_MIGRATION, only / LOG_PURGE_MIGRATION)
    return _database(pg, "hk_partial", only)


@pytest.fixture(scope="session")
def bare_database(pg: LocalPostgres, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database where no migration was applied."""
    return _database(pg, "hk_bare", tmp_path_factory.mktemp("no-migrations"))


def _database(pg: LocalPostgres, name: str, migrations: Path) -> str:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name}")
        conn.execute(f"create database {name}")
    url = pg.url_for("postgres", db=name)
    apply_migrations(url, migrations)
    return url


@pytest.fixture
def project_on(
    leak_guard: Leaks,
) -> Iterator[Callable[[str], Project]]:
    """Start a stand-in project over another database: `project_on(url)`."""
    running: list[Iterator[Project]] = []

    def start(database_url: str) -> Project:
        generator = _project(database_url, leak_guard)
        running.append(generator)
        return next(generator)

    yield start
    for generator in running:
        next(generator, None)


@pytest.fixture(params=["postgres", "supabase"])
def database(
    request: pytest.FixtureRequest, pg: LocalPostgres, project: Project
) -> Iterator[Any]:
    """The same `Database` interface over each transport in turn."""
    if request.param == "postgres":
        db: Any = PostgresDatabase(pg.url)
    else:
        db = SupabaseDatabase(load_settings(project.settings_env()))
    try:
        yield db
    finally:
        db.close()
