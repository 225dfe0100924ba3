"""Database access: pick the transport the settings name."""

from __future__ import annotations

from housekeeper.config import Settings
from housekeeper.db.base import Database
from housekeeper.errors import ConfigurationError

__all__ = ["Database", "open_database"]


def open_database(settings: Settings) -> Database:
    """The direct transport when `DATABASE_URL` is set, else Supabase."""
    if settings.transport == "postgres":
        from housekeeper.db.postgres import PostgresDatabase

        assert settings.database_url
        return PostgresDatabase(
            settings.database_url, connect_timeout_s=settings.db_connect_timeout_s
        )
    if settings.transport == "supabase":
        from housekeeper.db.supabase import SupabaseDatabase

        return SupabaseDatabase(settings)
    raise ConfigurationError(
        "no database configured: set DATABASE_URL, or SUPABASE_URL and "
        "SUPABASE_SERVICE_ROLE_KEY"
    )
