"""The direct Postgres transport (psycopg 3), for `DATABASE_URL`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from housekeeper.db.base import Database, missing_function_error
from housekeeper.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    HousekeeperError,
    LockTimeoutError,
    StatementTimeoutError,
)

logger = logging.getLogger(__name__)

_CONFIGURATION_ERRORS = (
    pg_errors.UndefinedTable,
    pg_errors.UndefinedColumn,
    pg_errors.DatatypeMismatch,
)


class PostgresDatabase(Database):
    """Calls the housekeeper functions over one autocommit connection.

    Autocommit makes every call its own short transaction, which is what keeps
    purge batches from holding locks. Prepared statements are off so that
    transaction-mode poolers (Supabase's port 6543) work.
    """

    transport = "postgres"

    def __init__(self, url: str, *, connect_timeout_s: float = 10.0) -> None:
        self._url = url
        self._connect_timeout_s = connect_timeout_s
        self._connection: psycopg.Connection[Any] | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            try:
                self._connection = psycopg.connect(
                    self._url,
                    autocommit=True,
                    connect_timeout=max(1, round(self._connect_timeout_s)),
                    prepare_threshold=None,
                    application_name="housekeeper",
                )
            except psycopg.Error as exc:
                raise DatabaseUnavailableError(
                    f"could not connect to the database: {_first_line(exc)}"
                ) from exc
        return self._connection

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        query = sql.SQL("select public.{}({})").format(
            sql.Identifier(function),
            sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in params
            ),
        )
        values = {
            name: Jsonb(value) if isinstance(value, dict) else value
            for name, value in params.items()
        }
        connection = self._connect()
        try:
            row = connection.execute(query, values).fetchone()
        except psycopg.Error as exc:
            raise _translate(exc, function) from exc
        return row[0] if row else None

    def close(self) -> None:
        if self._connection is not None and not self._connection.closed:
            self._connection.close()
        self._connection = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _translate(exc: psycopg.Error, function: str) -> HousekeeperError:
    message = _first_line(exc)
    if isinstance(exc, pg_errors.LockNotAvailable):
        return LockTimeoutError(f"{function}: {message}")
    if isinstance(exc, pg_errors.QueryCanceled):
        return StatementTimeoutError(f"{function}: {message}")
    if isinstance(exc, pg_errors.UndefinedFunction) and function in message:
        return missing_function_error(function)
    if isinstance(exc, _CONFIGURATION_ERRORS):
        return ConfigurationError(message)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return DatabaseError(
            f"{function}: {message}; the database role needs EXECUTE on the "
            "housekeeper functions (see README, 'Supabase transport and migrations')"
        )
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnavailableError(f"database connection failed: {message}")
    return DatabaseError(f"{function}: {message}")
