"""Streamed, checked downloads of CDN media.

`download` fetches one URL with a size cap and a total deadline and checks the
status, the Content-Type, the magic bytes and the Content-Length before anything
is handed to a decoder. Images come back as bytes (they are capped at a few tens
of megabytes and Pillow wants them whole); videos are written to a temporary
file that the caller removes with `Downloaded.discard()`.

URLs from the CDN carry signatures in their query string, so every message and
log line names a URL through `redact_url`, which drops the query.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx

from housekeeper.errors import (
    MediaDownloadError,
    MediaExpiredError,
    MediaRejectedError,
)

logger = logging.getLogger(__name__)

DownloadKind = Literal["image", "video"]

EXPIRED_MARKER = "URL signature expired"
USER_AGENT = "housekeeper-media/0.1"

IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "webp", "avif"})
VIDEO_FORMATS = frozenset({"mp4", "mov", "webm", "matroska"})
_GENERIC_TYPES = frozenset({"", "application/octet-stream"})
_VIDEO_SUFFIX = {"mp4": ".mp4", "mov": ".mov", "webm": ".webm", "matroska": ".mkv"}

# Enough for every signature below, including an ftyp box's compatible brands.
_SNIFF_BYTES = 64
_CHUNK_BYTES = 64 * 1024
_ERROR_BODY_BYTES = 4096

_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
)
_MOV_BRANDS = frozenset({b"qt  "})
_MP4_BRANDS = frozenset(
    {
        b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso8", b"iso9",
        b"mp41", b"mp42", b"mp71", b"avc1", b"M4V ", b"M4VH", b"M4VP", b"dash",
        b"3gp4", b"3gp5", b"3gp6", b"3g2a", b"mmp4", b"MSNV", b"f4v ", b"XAVC",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Downloaded:
    """One checked download: `data` for images, `path` (a temporary file) for videos.

    `url` is the redacted URL (no query string). `format` is what the magic bytes
    say (`jpeg`, `png`, `gif`, `webp`, `avif`, `mp4`, `mov`, `webm`,
    `matroska`); `content_type` is what the server declared.
    """

    url: str
    kind: DownloadKind
    format: str
    content_type: str
    size_bytes: int
    sha256: str
    elapsed_s: float
    data: bytes | None = None
    path: Path | None = None

    def discard(self) -> None:
        """Remove the temporary file of a video download, if there is one."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def redact_url(url: str) -> str:
    """The URL without credentials, query string or fragment, safe to log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def url_expiry(url: str) -> datetime | None:
    """When a signed CDN URL expires, from its `oe=` parameter (hex unix seconds).

    None when the URL has no such parameter or it is not a valid time.
    """
    try:
        values = parse_qs(urlsplit(url).query).get("oe")
    except ValueError:
        return None
    if not values:
        return None
    try:
        return datetime.fromtimestamp(int(values[0], 16), UTC)
    except (ValueError, OverflowError, OSError):
        return None


def url_expired(url: str, now: datetime) -> bool:
    """Whether the URL's `oe=` time is at or before `now` (timezone-aware).

    A URL without a readable `oe=` is not known to be expired, so this answers
    False and the download decides.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    expiry = url_expiry(url)
    return expiry is not None and expiry <= now


def sniff(head: bytes) -> str | None:
    """The media format named by the first bytes of a file, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        # The EBML header names its DocType within the first few dozen bytes.
        return "webm" if b"webm" in head[:_SNIFF_BYTES] else "matroska"
    return None


def _sniff_ftyp(head: bytes) -> str | None:
    box_size = int.from_bytes(head[:4], "big")
    end = min(len(head), box_size) if box_size >= 16 else min(len(head), 16)
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if major in _HEIF_BRANDS or (brands & _HEIF_BRANDS and not brands & _MP4_BRANDS):
        return "heic"
    if major in _MOV_BRANDS:
        return "mov"
    if brands & (_MP4_BRANDS | _MOV_BRANDS):
        return "mp4"
    return None


class _Deadline:
    """A total deadline that can cut a blocked socket read short.

    httpx only has per-operation timeouts, so a server that drips a byte just
    before each read timeout could hold a download forever. The sockets the
    request uses are registered here and shut down when the deadline passes,
    which wakes the blocked read at once.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.expires_at = time.monotonic() + timeout_s
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def remaining_s(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.expires_at

    def watch_stream(self, stream: Any) -> None:
        get_extra_info = getattr(stream, "get_extra_info", None)
        sock = get_extra_info("socket") if get_extra_info else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._done:
                return
            if self.fired:
                _shutdown(sock)
            else:
                self._sockets.append(sock)

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event in (
            "connection.connect_tcp.complete",
            "connection.start_tls.complete",
        ):
            self.watch_stream(info.get("return_value"))

    def cancel(self) -> None:
        with self._lock:
            self._done = True
            self._sockets.clear()
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in self._sockets:
                _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    # The plain socket method, also for a TLS socket: SSLSocket.shutdown would
    # tear down its SSL object under the thread that is reading from it.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def download(
    url: str,
    *,
    kind: DownloadKind,
    max_bytes: int,
    timeout_s: float,
    client: httpx.Client | None = None,
    tmp_dir: Path | None = None,
) -> Downloaded:
    """Download one image or video, checked before anything decodes it.

    Refuses: a status other than 200 (403 with `URL signature expired` raises
    `MediaExpiredError`), a Content-Type outside `image/*` or `video/*` for the
    kind (`application/octet-stream` or none is accepted when the magic bytes
    agree), magic bytes of another format, a Content-Length or body over
    `max_bytes`, fewer bytes than announced, and anything still running after
    `timeout_s` in total. Redirects are not followed. Failures raise
    `MediaDownloadError` (transfer) or `MediaRejectedError` (content).

    A shared `client` reuses connections across downloads and is left open;
    without one, a client is made and closed for this download.
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', not {kind!r}")
    if max_bytes <= 0 or timeout_s <= 0:
        raise ValueError("max_bytes and timeout_s must be positive")
    safe_url = redact_url(url)
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        raise MediaDownloadError(
            f"{safe_url}: only well-formed http and https URLs can be downloaded",
            details={"url": safe_url},
        )

    own_client = client is None
    http = client or httpx.Client(follow_redirects=False, trust_env=False)
    deadline = _Deadline(timeout_s)
    started = time.monotonic()
    try:
        return _fetch(url, safe_url, kind, max_bytes, http, deadline, tmp_dir, started)
    except httpx.HTTPError as exc:
        raise _transport_error(exc, url, safe_url, deadline) from exc
    except httpx.InvalidURL as exc:
        raise MediaDownloadError(
            f"{safe_url}: invalid URL", details={"url": safe_url}
        ) from exc
    except OSError as exc:
        # The temporary file of a video: a full or read-only disk.
        raise MediaDownloadError(
            f"{safe_url}: cannot write the download ({exc.strerror})",
            details={"url": safe_url},
        ) from exc
    finally:
        deadline.cancel()
        if own_client:
            http.close()


def _fetch(
    url: str,
    safe_url: str,
    kind: DownloadKind,
    max_bytes: int,
    http: httpx.Client,
    deadline: _Deadline,
    tmp_dir: Path | None,
    started: float,
) -> Downloaded:
    remaining_s = deadline.remaining_s()
    headers = {
        "User-Agent": USER_AGENT,
        "Accept": f"{kind}/*",
        # Content-Length must describe the bytes we count and store.
        "Accept-Encoding": "identity",
    }
    request = http.build_request(
        "GET",
        url,
        headers=headers,
        timeout=httpx.Timeout(remaining_s),
        extensions={"trace": deadline.trace},
    )
    response = http.send(request, stream=True)
    try:
        deadline.watch_stream(response.extensions.get("network_stream"))
        content_type = _check_response(response, safe_url, kind, max_bytes)
        return _read_body(
            response,
            safe_url,
            kind,
            content_type,
            max_bytes,
            deadline,
            tmp_dir,
            started,
        )
    finally:
        response.close()


def _check_response(
    response: httpx.Response, safe_url: str, kind: DownloadKind, max_bytes: int
) -> str:
    status = response.status_code
    details: dict[str, Any] = {"url": safe_url, "status": status}
    if status != 200:
        body = _error_body(response)
        if status == 403 and EXPIRED_MARKER.lower() in body.lower():
            raise MediaExpiredError(
                f"{safe_url}: the signed URL has expired (HTTP 403)", details=details
            )
        if 300 <= status < 400:
            target = redact_url(response.headers.get("location", ""))
            raise MediaDownloadError(
                f"{safe_url}: redirect (HTTP {status}) to {target} not followed",
                details=details,
            )
        raise MediaDownloadError(f"{safe_url}: HTTP {status}", details=details)

    declared = str(response.headers.get("content-type", ""))
    content_type = declared.split(";")[0].strip().lower()
    if content_type not in _GENERIC_TYPES and not content_type.startswith(f"{kind}/"):
        raise MediaRejectedError(
            f"{safe_url}: Content-Type {content_type} is not an {kind} type",
            details={"url": safe_url, "content_type": content_type},
        )

    announced = _content_length(response, safe_url)
    if announced is not None and announced > max_bytes:
        raise MediaDownloadError(
            f"{safe_url}: Content-Length {announced} exceeds the cap of "
            f"{max_bytes} bytes",
            details={"url": safe_url, "content_length": announced},
        )
    return content_type


def _content_length(response: httpx.Response, safe_url: str) -> int | None:
    raw = response.headers.get("content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise MediaDownloadError(
            f"{safe_url}: invalid Content-Length {raw[:40]!r}",
            details={"url": safe_url},
        )
    return value


def _error_body(response: httpx.Response) -> str:
    collected = b""
    with contextlib.suppress(httpx.HTTPError):
        for chunk in response.iter_bytes():
            collected += chunk
            if len(collected) >= _ERROR_BODY_BYTES:
                break
    return collected[:_ERROR_BODY_BYTES].decode("utf-8", "replace")


def _read_body(
    response: httpx.Response,
    safe_url: str,
    kind: DownloadKind,
    content_type: str,
    max_bytes: int,
    deadline: _Deadline,
    tmp_dir: Path | None,
    started: float,
) -> Downloaded:
    digest = hashlib.sha256()
    buffer = bytearray()
    sink: IO[bytes] | None = None
    path: Path | None = None
    fmt: str | None = None
    received = 0
    try:
        for chunk in response.iter_bytes(_CHUNK_BYTES):
            if deadline.expired():
                raise _timeout_error(safe_url, deadline)
            received += len(chunk)
            if received > max_bytes:
                raise MediaDownloadError(
                    f"{safe_url}: body exceeds the cap of {max_bytes} bytes",
                    details={"url": safe_url, "max_bytes": max_bytes},
                )
            digest.update(chunk)
            if fmt is None:
                buffer += chunk
                if len(buffer) < _SNIFF_BYTES:
                    continue
                fmt = _check_magic(bytes(buffer), safe_url, kind, content_type)
                if kind == "video":
                    sink, path = _open_temp(fmt, tmp_dir)
                    sink.write(buffer)
                    buffer = bytearray()
            elif sink is not None:
                sink.write(chunk)
            else:
                buffer += chunk

        if deadline.expired():
            raise _timeout_error(safe_url, deadline)
        if received == 0:
            raise MediaDownloadError(
                f"{safe_url}: empty body", details={"url": safe_url}
            )
        if fmt is None:
            fmt = _check_magic(bytes(buffer), safe_url, kind, content_type)
            if kind == "video":
                sink, path = _open_temp(fmt, tmp_dir)
                sink.write(buffer)
                buffer = bytearray()
        announced = _content_length(response, safe_url)
        if announced is not None and response.num_bytes_downloaded != announced:
            raise MediaDownloadError(
                f"{safe_url}: received {response.num_bytes_downloaded} of "
                f"{announced} announced bytes",
                details={"url": safe_url, "content_length": announced},
            )
        if sink is not None:
            sink.close()
    except BaseException:
        if sink is not None:
            sink.close()
        if path is not None:
            path.unlink(missing_ok=True)
        raise

    result = Downloaded(
        url=safe_url,
        kind=kind,
        format=fmt,
        content_type=content_type,
        size_bytes=received,
        sha256=digest.hexdigest(),
        elapsed_s=time.monotonic() - started,
        data=bytes(buffer) if kind == "image" else None,
        path=path,
    )
    logger.debug(
        "downloaded %s: %s, %d bytes in %.2f s",
        safe_url,
        fmt,
        received,
        result.elapsed_s,
    )
    return result


def _check_magic(
    head: bytes, safe_url: str, kind: DownloadKind, content_type: str
) -> str:
    fmt = sniff(head)
    allowed = IMAGE_FORMATS if kind == "image" else VIDEO_FORMATS
    if fmt in allowed:
        return fmt
    declared = content_type or "no Content-Type"
    if fmt == "heic":
        reason = "HEIC/HEIF images are not supported"
    elif fmt is None:
        reason = f"the bytes match no known {kind} format (declared {declared})"
    else:
        reason = f"the bytes are {fmt}, not an {kind} (declared {declared})"
    raise MediaRejectedError(
        f"{safe_url}: {reason}", details={"url": safe_url, "format": fmt}
    )


def _open_temp(fmt: str, tmp_dir: Path | None) -> tuple[IO[bytes], Path]:
    fd, name = tempfile.mkstemp(
        prefix="housekeeper-", suffix=_VIDEO_SUFFIX.get(fmt, ".bin"), dir=tmp_dir
    )
    return os.fdopen(fd, "wb"), Path(name)


def _timeout_error(safe_url: str, deadline: _Deadline) -> MediaDownloadError:
    return MediaDownloadError(
        f"{safe_url}: not complete within the total timeout of "
        f"{deadline.timeout_s:g} s",
        details={"url": safe_url, "timeout_s": deadline.timeout_s},
    )


def _transport_error(
    exc: httpx.HTTPError, url: str, safe_url: str, deadline: _Deadline
) -> MediaDownloadError:
    if deadline.expired() or isinstance(exc, httpx.PoolTimeout):
        return _timeout_error(safe_url, deadline)
    # httpx's transport errors do not normally carry the URL; scrub it anyway,
    # the query string is a credential.
    text = str(exc).replace(url, safe_url)
    query = urlsplit(url).query
    if query:
        text = text.replace(query, "")
    if isinstance(exc, httpx.ConnectTimeout):
        cause = "connect timed out"
    elif isinstance(exc, httpx.TimeoutException):
        cause = "timed out waiting for the server"
    elif isinstance(exc, httpx.ConnectError):
        cause = f"connection failed ({text})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        cause = f"connection closed early ({text})"
    elif isinstance(exc, httpx.ReadError):
        cause = f"connection broken while reading ({text})"
    else:
        cause = f"{type(exc).__name__} ({text})"
    return MediaDownloadError(f"{safe_url}: {cause}", details={"url": safe_url})
