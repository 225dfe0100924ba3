"""A stand-in for PostgREST's RPC endpoint. A TEST FIXTURE, never a product part.

PostgREST itself cannot be installed here, so this small HTTP server on
127.0.0.1 plays the part of a Supabase project's `/rest/v1/rpc/<function>`
over the embedded Postgres, doing what matters to the Supabase transport the
way PostgREST does:

- the `apikey` header must hold a key signed with the project's JWT secret
  (Supabase's gateway), and the bearer token's `role` claim picks the role;
- the call runs in one transaction as that role (`SET LOCAL ROLE`), with the
  role's own `statement_timeout` applied, as PostgREST applies impersonated
  role settings;
- the JSON body is turned into typed arguments by `json_to_record` with the
  function's declared argument types, so Postgres parses every value itself;
- errors come back as `{"code", "message", "details", "hint"}` with PostgREST's
  SQLSTATE to HTTP status mapping; an unknown function is a 404 `PGRST202`.

Every request is recorded (raw request target, headers, body, and the
arguments as Postgres typed them) so tests can assert what reached the SQL.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import psycopg
from psycopg import sql

RPC_PATH = re.compile(r"^/rest/v1/rpc/([A-Za-z_][A-Za-z0-9_]*)$")
ROLES = ("anon", "authenticated", "service_role")


def mint_key(secret: str, role: str) -> str:
    """A Supabase-style API key: an HS256 JWT whose `role` claim names the role."""
    now = int(time.time())
    claims = {"iss": "supabase-standin", "role": role, "iat": now, "exp": now + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


def status_for(sqlstate: str, *, authed: bool) -> int:
    """PostgREST's HTTP status for a SQLSTATE (its documented mapping table)."""
    exact = {
        "23503": 409,
        "23505": 409,
        "25006": 405,
        "53400": 500,
        "P0001": 400,
        "42883": 404,
        "42P01": 404,
        "42P17": 500,
        "42501": 403 if authed else 401,
    }
    if sqlstate in exact:
        return exact[sqlstate]
    by_class = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403,
        "2D": 500, "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503,
        "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
        "P0": 500, "XX": 500,
    }  # fmt: skip
    return by_class.get(sqlstate[:2], 400)


@dataclass
class RecordedCall:
    """One request as the stand-in saw it."""

    target: str
    function: str | None
    headers: dict[str, str]
    body: bytes
    role: str | None = None
    typed_args: dict[str, Any] | None = None
    status: int = 0
    response: Any = None


@dataclass
class PostgrestStandIn:
    """The RPC endpoint of a pretend Supabase project at `url`."""

    database_url: str
    jwt_secret: str
    delay_s: float = 0.0
    delay_functions: frozenset[str] | None = None
    calls: list[RecordedCall] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _release: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def key(self, role: str) -> str:
        """An API key of this project for `role`."""
        return mint_key(self.jwt_secret, role)

    def start(self) -> PostgrestStandIn:
        standin = self

        class Handler(_Handler):
            owner = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll keeps `stop` (and so every test's teardown) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="postgrest-standin",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PostgrestStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def rpc_calls(self, function: str | None = None) -> list[RecordedCall]:
        """The recorded RPCs, optionally of one function only."""
        with self._lock:
            return [c for c in self.calls if function in (None, c.function)]

    def record(self, call: RecordedCall) -> None:
        with self._lock:
            self.calls.append(call)

    def wait_before_answering(self, function: str | None) -> None:
        """Hang like a stuck PostgREST: after the SQL ran, before the answer."""
        if self.delay_s > 0 and (
            self.delay_functions is None or function in self.delay_functions
        ):
            self._release.wait(self.delay_s)


class _Handler(BaseHTTPRequestHandler):
    owner: PostgrestStandIn
    server_version = "postgrest-standin"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet: the tests read `calls`, not a server log."""

    def _answer(self, call: RecordedCall, status: int, body: Any) -> None:
        payload = json.dumps(body).encode()
        call.status, call.response = status, body
        self.owner.record(call)
        self.owner.wait_before_answering(call.function)
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            # The client gave up (its read timeout); nothing left to tell it.
            pass

    def _error(
        self,
        call: RecordedCall,
        status: int,
        code: str | None,
        message: str,
        *,
        details: str | None = None,
        hint: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"message": message, "details": details, "hint": hint}
        if code is not None:
            body = {"code": code, **body}
        self._answer(call, status, body)

    def do_GET(self) -> None:
        call = RecordedCall(self.path, None, dict(self.headers), b"")
        self._error(call, 405, "PGRST117", "only POST RPCs are served here")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        match = RPC_PATH.match(self.path)
        call = RecordedCall(
            self.path, match.group(1) if match else None, dict(self.headers), body
        )
        if match is None:
            self._error(call, 404, "PGRST125", f"invalid path {self.path}")
            return

        claims = self._verify(call)
        if claims is None:
            return
        role = str(claims.get("role", "anon"))
        call.role = role
        authed = "role" in claims
        if role not in ROLES:
            self._error(call, 401, "PGRST301", f'role "{role}" does not exist')
            return

        try:
            args = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._error(call, 400, "PGRST102", "Empty or invalid json")
            return
        if not isinstance(args, dict):
            self._error(call, 400, "PGRST102", "The request body must be an object")
            return
        self._run(call, role, authed, args)

    def _verify(self, call: RecordedCall) -> dict[str, Any] | None:
        apikey = self.headers.get("apikey")
        if not apikey:
            self._error(
                call,
                401,
                None,
                "No API key found in request",
                hint="No `apikey` request header or url param was found.",
            )
            return None
        try:
            jwt.decode(apikey, self.owner.jwt_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            self._error(
                call,
                401,
                None,
                "Invalid API key",
                hint="Double check your Supabase `anon` or `service_role` API key.",
            )
            return None
        authorization = self.headers.get("Authorization", "")
        if not authorization:
            return {}
        scheme, _, token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise jwt.InvalidTokenError("not a bearer token")
            claims: dict[str, Any] = jwt.decode(
                token, self.owner.jwt_secret, algorithms=["HS256"]
            )
        except jwt.PyJWTError as exc:
            self._error(call, 401, "PGRST301", f"JWT invalid: {type(exc).__name__}")
            return None
        return claims

    def _run(
        self, call: RecordedCall, role: str, authed: bool, args: dict[str, Any]
    ) -> None:
        function = call.function
        assert function is not None
        try:
            with psycopg.connect(self.owner.database_url, autocommit=True) as conn:
                signature = _signature(conn, function, set(args))
                if signature is None:
                    names = ", ".join(sorted(args))
                    self._error(
                        call,
                        404,
                        "PGRST202",
                        f"Could not find the function public.{function}({names}) "
                        "in the schema cache",
                        details=f"Searched for the function public.{function} with "
                        f"parameters {names or 'none'}, but no matches were found "
                        "in the schema cache.",
                        hint=None,
                    )
                    return
                with conn.transaction():
                    conn.execute(
                        sql.SQL("set local role {}").format(sql.Identifier(role))
                    )
                    _apply_role_settings(conn, role)
                    call.typed_args, result = _call(conn, function, signature, args)
        except psycopg.Error as exc:
            diag = exc.diag
            code = diag.sqlstate or "XX000"
            self._error(
                call,
                status_for(code, authed=authed),
                code,
                diag.message_primary or str(exc),
                details=diag.message_detail,
                hint=diag.message_hint,
            )
            return
        self._answer(call, 200, result)


def _signature(
    conn: psycopg.Connection[Any], function: str, given: set[str]
) -> list[tuple[str, str]] | None:
    """The (name, type) list of the public function that fits the given names."""
    rows = conn.execute(
        """
        select coalesce(p.proargnames[1:p.pronargs], '{}'),
               array(select format_type(t, null) from unnest(p.proargtypes) t),
               p.pronargdefaults
          from pg_proc p join pg_namespace n on n.oid = p.pronamespace
         where n.nspname = 'public' and p.proname = %s
        """,
        (function,),
    ).fetchall()
    for names, types, defaults in rows:
        required = set(names[: len(names) - defaults])
        if required <= given <= set(names):
            return [(n, t) for n, t in zip(names, types, strict=True) if n in given]
    return None


def _apply_role_settings(conn: psycopg.Connection[Any], role: str) -> None:
    rows = conn.execute(
        """
        select split_part(c, '=', 1), substr(c, strpos(c, '=') + 1)
          from pg_db_role_setting s
          cross join unnest(s.setconfig) c
         where s.setrole = (select oid from pg_roles where rolname = %s)
           and s.setdatabase in (0, (select oid from pg_database
                                      where datname = current_database()))
        """,
        (role,),
    ).fetchall()
    for name, value in rows:
        if name == "statement_timeout":
            conn.execute("select set_config(%s, %s, true)", (name, value))


def _call(
    conn: psycopg.Connection[Any],
    function: str,
    signature: list[tuple[str, str]],
    args: dict[str, Any],
) -> tuple[dict[str, Any], Any]:
    payload = json.dumps(args)
    if not signature:
        query = sql.SQL("select public.{}()").format(sql.Identifier(function))
        row = conn.execute(query).fetchone()
        return {}, row[0] if row else None
    record = sql.SQL("json_to_record({}::json) as r({})").format(
        sql.Literal(payload),
        sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_name))
            for name, type_name in signature
        ),
    )
    typed = conn.execute(sql.SQL("select to_jsonb(r) from {}").format(record))
    typed_row = typed.fetchone()
    query = sql.SQL("select public.{}({}) from {}").format(
        sql.Identifier(function),
        sql.SQL(", ").join(
            sql.SQL("{} => r.{}").format(sql.Identifier(name), sql.Identifier(name))
            for name, _ in signature
        ),
        record,
    )
    row = conn.execute(query).fetchone()
    return (typed_row[0] if typed_row else {}), (row[0] if row else None)
