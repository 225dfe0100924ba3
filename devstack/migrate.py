"""Apply `supabase/migrations/` to a Postgres, the way the Supabase CLI records them."""

from __future__ import annotations

from pathlib import Path

import psycopg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "migrations"

# Supabase creates these roles; a plain Postgres needs them for the grants.
BOOTSTRAP = """
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin bypassrls;
  end if;
end;
$$;
-- As on Supabase: service_role may use the application's tables, now and later.
grant usage on schema public to service_role;
grant all on all tables in schema public to service_role;
grant all on all sequences in schema public to service_role;
alter default privileges in schema public grant all on tables to service_role;
alter default privileges in schema public grant all on sequences to service_role;
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (
  version text primary key,
  statements text[],
  name text
);
"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in version order."""
    return sorted(directory.glob("*.sql"))


def apply_migrations(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(BOOTSTRAP)
        done = {
            row[0]
            for row in connection.execute(
                "select version from supabase_migrations.schema_migrations"
            )
        }
        for path in migration_files(directory):
            version, _, name = path.stem.partition("_")
            if version in done:
                continue
            with connection.transaction():
                connection.execute(path.read_text())
                connection.execute(
                    "insert into supabase_migrations.schema_migrations"
                    " (version, statements, name) values (%s, %s, %s)",
                    (version, [path.read_text()], name),
                )
            applied.append(version)
    return applied
