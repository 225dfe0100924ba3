"""The Supabase transport: every operation is a PostgREST RPC, through supabase-py.

`call` POSTs the named parameters as a JSON body to `/rest/v1/rpc/<function>`
with the service-role key as `apikey` and bearer token. Nothing travels in the
URL but the function's name, so a timestamp's `+` can never turn into a space
and no id list can outgrow a URL. PostgREST's answers are mapped onto the same
error tree as the direct transport's psycopg errors.

supabase-py and httpx are imported only when a `SupabaseDatabase` is built, so
the health check's cold start never pays for them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from housekeeper.config import Settings
from housekeeper.db.base import Database, missing_function_error
from housekeeper.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailableError,
    HousekeeperError,
    LockTimeoutError,
    StatementTimeoutError,
)

if TYPE_CHECKING:
    import httpx
    from postgrest.exceptions import APIError

logger = logging.getLogger(__name__)

_SQLSTATE = re.compile(r"^[0-9A-Z]{5}$")

# SQLSTATE classes that psycopg raises as OperationalError, which the direct
# transport reports as "database unavailable": the same failure must read the
# same whichever transport met it.
OPERATIONAL_CLASSES = (
    "08", "38", "39", "3B", "40", "53", "54", "55", "57", "58", "F0", "HV",
)  # fmt: skip
_CONFIGURATION_CODES = ("42P01", "42703", "42804")
# PostgREST's own codes for "the function is not in the schema cache" and
# Postgres's for "no such function".
_MISSING_FUNCTION_CODES = ("PGRST202", "42883")
# PGRST0xx: PostgREST could not reach or use its database connection pool.
_POSTGREST_UNAVAILABLE = ("PGRST000", "PGRST001", "PGRST002", "PGRST003")

_WRONG_KEY = (
    "SUPABASE_SERVICE_ROLE_KEY is not a service_role key of the project at SUPABASE_URL"
)


def encode_param(value: Any) -> Any:
    """A parameter as PostgREST must receive it in the JSON body.

    Datetimes become ISO 8601 in UTC with microseconds and an explicit offset,
    which Postgres parses back to the same instant; a naive datetime is
    refused rather than guessed at. Dicts stay JSON objects (for jsonb).
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("a naive datetime cannot be sent to the database")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, Mapping):
        return {str(key): encode_param(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode_param(item) for item in value]
    return value


class SupabaseDatabase(Database):
    """Calls the housekeeper functions as RPCs of the project's PostgREST API.

    Each RPC is one PostgREST request and so one transaction; supabase-py's
    retries are off because a POST is not idempotent, and the job's own loop
    decides what to do after a failure.
    """

    transport = "supabase"

    def __init__(self, settings: Settings) -> None:
        import httpx
        from supabase import ClientOptions, SupabaseException, create_client

        url, key = settings.supabase_url, settings.supabase_service_role_key
        if not url or not key:
            raise ConfigurationError(
                "the Supabase transport needs SUPABASE_URL and "
                "SUPABASE_SERVICE_ROLE_KEY"
            )
        self._key = key
        self._connect_timeout_s = settings.supabase_connect_timeout_s
        self._read_timeout_s = settings.supabase_read_timeout_s
        self._last_response: httpx.Response | None = None
        # supabase-py takes its timeouts from the httpx client it is given
        # (its own `timeout` arguments are deprecated and warn); the response
        # hook keeps the HTTP status, which postgrest's APIError drops.
        self._http = httpx.Client(
            timeout=httpx.Timeout(
                self._read_timeout_s,
                connect=self._connect_timeout_s,
                pool=self._connect_timeout_s,
            ),
            follow_redirects=False,
            event_hooks={"response": [self._remember]},
        )
        try:
            self._client = create_client(
                url.rstrip("/"),
                key,
                ClientOptions(
                    httpx_client=self._http,
                    postgrest_client_retry=False,
                    auto_refresh_token=False,
                    persist_session=False,
                ),
            )
        except SupabaseException as exc:
            self._http.close()
            raise ConfigurationError(
                f"SUPABASE_URL is not usable: {exc.message} "
                "(expected https://<project>.supabase.co)"
            ) from None

    def _remember(self, response: httpx.Response) -> None:
        self._last_response = response

    def call(self, function: str, params: Mapping[str, Any]) -> Any:
        import httpx
        from postgrest.exceptions import APIError

        body = {name: encode_param(value) for name, value in params.items()}
        self._last_response = None
        try:
            response = self._client.rpc(function, body).execute()
        except APIError as exc:
            status = self._last_response.status_code if self._last_response else 0
            raise self._translate(exc, status, function) from exc
        except httpx.TimeoutException as exc:
            message = self._timeout_message(exc, function)
            raise DatabaseUnavailableError(message) from exc
        except httpx.HTTPError as exc:
            raise DatabaseUnavailableError(
                f"{function}: could not reach Supabase: "
                f"{self._clean(str(exc)) or type(exc).__name__}"
            ) from exc

        content_type = (
            self._last_response.headers.get("content-type", "")
            if self._last_response is not None
            else ""
        )
        if "json" not in content_type:
            raise DatabaseError(
                f"{function}: SUPABASE_URL answered {content_type or 'no content type'}"
                " instead of JSON; is it the project's API URL?"
            )
        return response.data

    def close(self) -> None:
        self._http.close()

    def _clean(self, text: str) -> str:
        # PostgREST never echoes the key, but a proxy in front of it might.
        first = text.strip().splitlines()[0] if text.strip() else ""
        return first.replace(self._key, "[redacted]")

    def _timeout_message(self, exc: httpx.TimeoutException, function: str) -> str:
        import httpx

        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return (
                f"{function}: could not connect to Supabase within "
                f"{self._connect_timeout_s:g} s (SUPABASE_CONNECT_TIMEOUT_S)"
            )
        return (
            f"{function}: Supabase did not answer within {self._read_timeout_s:g} s "
            "(SUPABASE_READ_TIMEOUT_S); the call may still complete on the server"
        )

    def _translate(
        self, error: APIError, status: int, function: str
    ) -> HousekeeperError:
        code = str(error.code or "")
        message = self._clean(str(error.message or "")) or f"HTTP {status}"
        shown = f", {code}" if code and code != str(status) else ""
        where = f"{function}: {message} (HTTP {status}{shown})"
        is_sqlstate = bool(_SQLSTATE.match(code))

        if code == "PGRST202" or (code == "42883" and function in message):
            return missing_function_error(function)
        if code == "57014":
            return StatementTimeoutError(where)
        if code == "55P03":
            return LockTimeoutError(where)
        if code == "42501" and "function" in message:
            return DatabaseError(
                f"{function} was refused ({message}, HTTP {status}): {_WRONG_KEY} "
                "(an anon or authenticated key may not run the housekeeper "
                "functions), or the migrations' grants to service_role are missing",
                details={"cause": "not_service_role", "function": function},
            )
        if code == "42501":
            # The function ran but its owner may not touch something inside.
            return DatabaseError(
                f"{where}; the role that applied the migrations owns the "
                "housekeeper functions and needs this privilege"
            )
        if status in (401, 403) or code.startswith("PGRST30"):
            return DatabaseError(
                f"{function} was refused (HTTP {status}: {message}): {_WRONG_KEY}",
                details={"cause": "key_rejected", "function": function},
            )
        if code in _CONFIGURATION_CODES:
            return ConfigurationError(message)
        if code in _POSTGREST_UNAVAILABLE or (
            is_sqlstate and code[:2] in OPERATIONAL_CLASSES
        ):
            return DatabaseUnavailableError(where)
        if status >= 500 and not is_sqlstate:
            return DatabaseUnavailableError(f"Supabase failed {where}")
        return DatabaseError(where)
