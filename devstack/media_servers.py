"""Loopback servers for the media job: a scriptable CDN and moto's S3 for R2.

`CdnServer` serves whatever a test or the demo registers per path: any status,
headers and body, and the failures a real CDN produces (a hang before or after
the headers, a connection reset, fewer bytes than Content-Length, a slow drip).
It records every request so a test can prove that none was made.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

Behaviour = Literal["normal", "hang_before_headers", "hang", "reset", "short", "drip"]


@dataclass(frozen=True)
class Route:
    """What the CDN answers on one path.

    `content_length` overrides the announced length (None: the body's length);
    `omit_length` sends none and closes the connection after the body.
    `behaviour`: `normal`; `hang_before_headers`; `hang` (headers and
    `partial_bytes` of the body, then silence); `reset` (the same, then a TCP
    reset); `short` (the body, then the connection closes before the announced
    length); `drip` (the body one `drip_bytes` piece per `drip_interval_s`).
    """

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None
    omit_length: bool = False
    behaviour: Behaviour = "normal"
    partial_bytes: int = 0
    drip_bytes: int = 1
    drip_interval_s: float = 0.05


@dataclass(frozen=True)
class SeenRequest:
    """One request the CDN received."""

    method: str
    path: str
    query: str
    headers: dict[str, str]


class CdnServer:
    """A threaded HTTP server on 127.0.0.1 standing in for the CDN."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self.requests: list[SeenRequest] = []
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        # A short poll interval keeps stop() (and each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="cdn-server",
            daemon=True,
        )

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>`."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str, query: str = "") -> str:
        """The full URL of `path`, with `query` (no leading `?`) when given."""
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    def add(self, path: str, route: Route) -> str:
        """Serve `route` on `path` (query strings are ignored); returns its URL."""
        with self._lock:
            self._routes[path] = route
        return self.url(path)

    def route(self, path: str) -> Route | None:
        """The route registered for `path`, if any."""
        with self._lock:
            return self._routes.get(path)

    def record(self, seen: SeenRequest) -> None:
        """Remember one request (called by the handler)."""
        with self._lock:
            self.requests.append(seen)

    def requests_for(self, path: str) -> list[SeenRequest]:
        """The requests received on `path`."""
        with self._lock:
            return [seen for seen in self.requests if seen.path == path]

    def start(self) -> CdnServer:
        """Start serving in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release hanging handlers and stop serving."""
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> CdnServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _handler_for(cdn: CdnServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeCDN/1.0"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            cdn.record(
                SeenRequest("GET", parts.path, parts.query, dict(self.headers.items()))
            )
            route = cdn.route(parts.path)
            if route is None:
                route = Route(
                    b"not found", 404, {"Content-Type": "text/plain; charset=utf-8"}
                )
            self._answer(route)

        def _answer(self, route: Route) -> None:
            if route.behaviour == "hang_before_headers":
                cdn.stopping.wait(60)
                self.close_connection = True
                return

            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.omit_length:
                self.close_connection = True
            else:
                length = route.content_length
                self.send_header(
                    "Content-Length", str(len(route.body) if length is None else length)
                )
            self.end_headers()

            if route.behaviour == "normal":
                self.wfile.write(route.body)
            elif route.behaviour == "short":
                self.wfile.write(route.body)
                self.close_connection = True
            elif route.behaviour == "drip":
                for start in range(0, len(route.body), route.drip_bytes):
                    if cdn.stopping.is_set():
                        break
                    self.wfile.write(route.body[start : start + route.drip_bytes])
                    time.sleep(route.drip_interval_s)
                self.close_connection = True
            else:
                self.wfile.write(route.body[: route.partial_bytes])
                self.wfile.flush()
                if route.behaviour == "hang":
                    cdn.stopping.wait(60)
                    self.close_connection = True
                else:
                    self._reset()

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout turns close() into a TCP RST.
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()
            self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            """Silent: tests assert on `CdnServer.requests` instead."""

    return Handler


class MotoS3:
    """moto's S3 server on 127.0.0.1, standing in for R2."""

    access_key_id = "local-access-key"
    secret_access_key = "local-secret-key"  # noqa: S105 - moto accepts any

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint_url = ""

    def start(self) -> MotoS3:
        """Start the server and learn its port."""
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Stop the server."""
        self._server.stop()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
