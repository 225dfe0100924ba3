"""download(): status, Content-Type, magic bytes, sizes and the total deadline,
against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import media_fixtures as mf
from devstack.media_servers import CdnServer, Route
from housekeeper.errors import (
    MediaDownloadError,
    MediaError,
    MediaExpiredError,
    MediaRejectedError,
)
from housekeeper.media.download import (
    download,
    redact_url,
    sniff,
    url_expired,
    url_expiry,
)

MB = 1024 * 1024
JPEG = mf.photo_jpeg(64, 48, noise=0.1)
PNG = mf.rgba_png()
SIGNED = "oe=6A2F427E&oh=00_SECRETSIGNATURE&_nc_ht=scontent"
# 0x6A2F427E seconds after the epoch.
OE_EXPIRY = datetime(2026, 6, 15, 0, 8, 30, tzinfo=UTC)


def jpeg_route(**overrides: Any) -> Route:
    return replace(Route(JPEG, headers={"Content-Type": "image/jpeg"}), **overrides)


def mp4_bytes(tmp_path: Path, ffmpeg: str) -> bytes:
    path = mf.make_video(
        tmp_path / "clip.mp4", width=64, height=64, duration_s=0.2, ffmpeg=ffmpeg
    )
    return path.read_bytes()


# --- signed URL expiry -------------------------------------------------------


def test_oe_6a2f427e_is_2026_06_15_and_expired_after_june_2026() -> None:
    url = f"https://scontent.cdninstagram.com/v/t51/1.jpg?{SIGNED}"

    assert 0x6A2F427E == 1781482110
    assert url_expiry(url) == OE_EXPIRY
    assert url_expired(url, datetime(2026, 7, 1, tzinfo=UTC)) is True
    assert url_expired(url, OE_EXPIRY) is True
    assert url_expired(url, OE_EXPIRY - timedelta(seconds=1)) is False


def test_url_without_readable_oe_is_not_known_expired() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)

    assert url_expiry("https://cdn.test/a.jpg") is None
    assert url_expired("https://cdn.test/a.jpg", now) is False
    assert url_expired("https://cdn.test/a.jpg?oe=zz", now) is False
    assert url_expired("https://cdn.test/a.jpg?oe=FFFFFFFFFFFFFFFFFFFF", now) is False


def test_url_expired_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        url_expired("https://cdn.test/a.jpg?oe=6A2F427E", datetime(2026, 7, 1))


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    url = "https://user:pw@scontent.cdninstagram.com:8443/v/p.jpg?oe=1&oh=sig#frag"

    assert redact_url(url) == "https://scontent.cdninstagram.com:8443/v/p.jpg"


# --- status ------------------------------------------------------------------


def test_403_url_signature_expired_raises_media_expired(cdn: CdnServer) -> None:
    cdn.add(
        "/v/expired.jpg",
        Route(b"URL signature expired", 403, {"Content-Type": "text/plain"}),
    )
    url = cdn.url("/v/expired.jpg", SIGNED)

    with pytest.raises(MediaExpiredError) as caught:
        download(url, kind="image", max_bytes=MB, timeout_s=5)

    assert caught.value.code == "media_expired"
    assert str(caught.value) == (
        f"{cdn.base_url}/v/expired.jpg: the signed URL has expired (HTTP 403)"
    )
    assert caught.value.details == {
        "url": f"{cdn.base_url}/v/expired.jpg",
        "status": 403,
    }


def test_403_with_another_body_is_a_download_error(cdn: CdnServer) -> None:
    cdn.add("/v/denied.jpg", Route(b"Forbidden", 403, {"Content-Type": "text/plain"}))

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/denied.jpg"), kind="image", max_bytes=MB, timeout_s=5)

    assert not isinstance(caught.value, MediaExpiredError)
    assert str(caught.value) == f"{cdn.base_url}/v/denied.jpg: HTTP 403"


def test_404_names_the_url_without_its_query(cdn: CdnServer) -> None:
    url = cdn.url("/v/missing.jpg", SIGNED)

    with pytest.raises(MediaDownloadError) as caught:
        download(url, kind="image", max_bytes=MB, timeout_s=5)

    assert str(caught.value) == f"{cdn.base_url}/v/missing.jpg: HTTP 404"


def test_redirect_is_not_followed(cdn: CdnServer) -> None:
    cdn.add(
        "/v/moved.jpg",
        Route(status=302, headers={"Location": "http://169.254.169.254/x?token=1"}),
    )

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/moved.jpg"), kind="image", max_bytes=MB, timeout_s=5)

    assert str(caught.value) == (
        f"{cdn.base_url}/v/moved.jpg: redirect (HTTP 302) to "
        "http://169.254.169.254/x not followed"
    )


# --- success -----------------------------------------------------------------


def test_image_download_returns_bytes_format_and_hash(cdn: CdnServer) -> None:
    cdn.add("/v/photo.jpg", jpeg_route())

    got = download(
        cdn.url("/v/photo.jpg", SIGNED), kind="image", max_bytes=MB, timeout_s=5
    )

    assert got.data == JPEG
    assert got.path is None
    assert got.format == "jpeg"
    assert got.content_type == "image/jpeg"
    assert got.size_bytes == len(JPEG)
    assert got.sha256 == hashlib.sha256(JPEG).hexdigest()
    assert got.url == f"{cdn.base_url}/v/photo.jpg"
    (seen,) = cdn.requests_for("/v/photo.jpg")
    assert seen.query == SIGNED
    assert seen.headers["Accept-Encoding"] == "identity"


def test_video_download_streams_to_a_temp_file(
    cdn: CdnServer, tmp_path: Path, work_dir: Path, ffmpeg: str
) -> None:
    body = mp4_bytes(tmp_path, ffmpeg)
    cdn.add("/v/reel.mp4", Route(body, headers={"Content-Type": "video/mp4"}))

    got = download(
        cdn.url("/v/reel.mp4"),
        kind="video",
        max_bytes=MB,
        timeout_s=5,
        tmp_dir=work_dir,
    )

    assert got.data is None
    assert got.path is not None
    assert got.path.parent == work_dir
    assert got.path.suffix == ".mp4"
    assert got.path.read_bytes() == body
    assert got.format == "mp4"
    assert got.sha256 == hashlib.sha256(body).hexdigest()
    got.discard()
    assert list(work_dir.iterdir()) == []


def test_octet_stream_is_accepted_when_the_magic_bytes_are_an_image(
    cdn: CdnServer,
) -> None:
    cdn.add("/v/blob", Route(PNG, headers={"Content-Type": "application/octet-stream"}))

    got = download(cdn.url("/v/blob"), kind="image", max_bytes=MB, timeout_s=5)

    assert got.format == "png"
    assert got.data == PNG


def test_octet_stream_with_html_bytes_is_rejected(cdn: CdnServer) -> None:
    cdn.add(
        "/v/blob",
        Route(
            b"<html>" + b" " * 100, headers={"Content-Type": "application/octet-stream"}
        ),
    )

    with pytest.raises(MediaRejectedError) as caught:
        download(cdn.url("/v/blob"), kind="image", max_bytes=MB, timeout_s=5)

    assert str(caught.value) == (
        f"{cdn.base_url}/v/blob: the bytes match no known image format "
        "(declared application/octet-stream)"
    )


def test_html_content_type_is_rejected_before_the_body(cdn: CdnServer) -> None:
    cdn.add("/v/page", Route(b"<html></html>", headers={"Content-Type": "text/html"}))

    with pytest.raises(MediaRejectedError) as caught:
        download(cdn.url("/v/page"), kind="image", max_bytes=MB, timeout_s=5)

    assert str(caught.value) == (
        f"{cdn.base_url}/v/page: Content-Type text/html is not an image type"
    )


def test_image_content_type_with_video_bytes_is_rejected(
    cdn: CdnServer, tmp_path: Path, ffmpeg: str
) -> None:
    cdn.add(
        "/v/liar.jpg",
        Route(mp4_bytes(tmp_path, ffmpeg), headers={"Content-Type": "image/jpeg"}),
    )

    with pytest.raises(MediaRejectedError, match="the bytes are mp4, not an image"):
        download(cdn.url("/v/liar.jpg"), kind="image", max_bytes=MB, timeout_s=5)


def test_video_kind_refuses_an_image_content_type(cdn: CdnServer) -> None:
    cdn.add("/v/photo.jpg", jpeg_route())

    with pytest.raises(
        MediaRejectedError, match="Content-Type image/jpeg is not an video"
    ):
        download(cdn.url("/v/photo.jpg"), kind="video", max_bytes=MB, timeout_s=5)


def test_heic_is_rejected_with_its_name(cdn: CdnServer) -> None:
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    cdn.add("/v/photo.heic", Route(heic, headers={"Content-Type": "image/heic"}))

    with pytest.raises(MediaRejectedError, match="HEIC/HEIF images are not supported"):
        download(cdn.url("/v/photo.heic"), kind="image", max_bytes=MB, timeout_s=5)


def test_empty_body_is_an_error(cdn: CdnServer) -> None:
    cdn.add("/v/empty.jpg", jpeg_route(body=b""))

    with pytest.raises(MediaDownloadError, match="empty body"):
        download(cdn.url("/v/empty.jpg"), kind="image", max_bytes=MB, timeout_s=5)


# --- sizes -------------------------------------------------------------------


def test_content_length_over_the_cap_is_refused_without_reading(cdn: CdnServer) -> None:
    # The body never comes: only an answer from the headers can be this fast.
    cdn.add("/v/huge.jpg", jpeg_route(content_length=50 * MB, behaviour="hang"))
    started = time.monotonic()

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/huge.jpg"), kind="image", max_bytes=MB, timeout_s=5)

    assert time.monotonic() - started < 2
    assert str(caught.value) == (
        f"{cdn.base_url}/v/huge.jpg: Content-Length 52428800 exceeds the cap of "
        "1048576 bytes"
    )


def test_body_over_the_cap_without_content_length_is_aborted(cdn: CdnServer) -> None:
    body = JPEG + b"\x00" * (2 * MB)
    cdn.add("/v/unbounded.jpg", jpeg_route(body=body, omit_length=True))

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/unbounded.jpg"), kind="image", max_bytes=MB, timeout_s=5)

    assert str(caught.value) == (
        f"{cdn.base_url}/v/unbounded.jpg: body exceeds the cap of 1048576 bytes"
    )


def test_fewer_bytes_than_content_length_is_an_error(cdn: CdnServer) -> None:
    cdn.add(
        "/v/short.jpg",
        jpeg_route(content_length=len(JPEG) + 500, behaviour="short"),
    )

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/short.jpg"), kind="image", max_bytes=MB, timeout_s=5)

    message = str(caught.value)
    assert message.startswith(f"{cdn.base_url}/v/short.jpg: connection closed early")
    assert f"received {len(JPEG)} bytes, expected {len(JPEG) + 500}" in message


def test_video_temp_file_is_removed_when_the_download_fails(
    cdn: CdnServer, tmp_path: Path, work_dir: Path, ffmpeg: str
) -> None:
    body = mp4_bytes(tmp_path, ffmpeg)
    cdn.add(
        "/v/cut.mp4",
        Route(
            body,
            headers={"Content-Type": "video/mp4"},
            content_length=len(body) + 10,
            behaviour="short",
        ),
    )

    with pytest.raises(MediaDownloadError):
        download(
            cdn.url("/v/cut.mp4"),
            kind="video",
            max_bytes=MB,
            timeout_s=5,
            tmp_dir=work_dir,
        )

    assert list(work_dir.iterdir()) == []


# --- broken connections and the total deadline -------------------------------


def test_connection_reset_is_a_download_error(cdn: CdnServer) -> None:
    cdn.add(
        "/v/reset.jpg",
        jpeg_route(body=JPEG + b"\x00" * MB, behaviour="reset", partial_bytes=100),
    )

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/reset.jpg"), kind="image", max_bytes=2 * MB, timeout_s=5)

    assert str(caught.value).startswith(
        f"{cdn.base_url}/v/reset.jpg: connection broken while reading"
    )
    assert "Connection reset by peer" in str(caught.value)


def test_connection_refused_is_a_download_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(MediaDownloadError) as caught:
        download(
            f"http://127.0.0.1:{port}/a.jpg?{SIGNED}",
            kind="image",
            max_bytes=MB,
            timeout_s=5,
        )

    assert str(caught.value).startswith(
        f"http://127.0.0.1:{port}/a.jpg: connection failed"
    )


@pytest.mark.parametrize("behaviour", ["hang", "hang_before_headers", "drip"])
def test_total_deadline_cuts_hangs_and_drips(cdn: CdnServer, behaviour: str) -> None:
    # A drip of one byte per 50 ms never trips a per-read timeout.
    cdn.add(
        "/v/slow.jpg",
        jpeg_route(behaviour=behaviour, partial_bytes=10, drip_interval_s=0.05),
    )
    started = time.monotonic()

    with pytest.raises(MediaDownloadError) as caught:
        download(cdn.url("/v/slow.jpg"), kind="image", max_bytes=MB, timeout_s=0.5)

    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5
    assert str(caught.value) == (
        f"{cdn.base_url}/v/slow.jpg: not complete within the total timeout of 0.5 s"
    )


def test_a_shared_client_is_reused_and_left_open(cdn: CdnServer) -> None:
    cdn.add("/v/one.jpg", jpeg_route())
    cdn.add("/v/two.jpg", jpeg_route(body=PNG, headers={"Content-Type": "image/png"}))

    with httpx.Client() as client:
        first = download(
            cdn.url("/v/one.jpg"),
            kind="image",
            max_bytes=MB,
            timeout_s=5,
            client=client,
        )
        second = download(
            cdn.url("/v/two.jpg"),
            kind="image",
            max_bytes=MB,
            timeout_s=5,
            client=client,
        )
        assert not client.is_closed

    assert (first.format, second.format) == ("jpeg", "png")


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "http://[::1/a.jpg", "scontent.cdninstagram.com/a.jpg"],
)
def test_malformed_or_non_http_urls_are_refused_without_a_request(url: str) -> None:
    with pytest.raises(MediaDownloadError, match="only well-formed http and https"):
        download(url, kind="image", max_bytes=MB, timeout_s=5)


def test_an_unwritable_temp_folder_is_a_download_error(
    cdn: CdnServer, tmp_path: Path, ffmpeg: str
) -> None:
    cdn.add(
        "/v/reel.mp4",
        Route(mp4_bytes(tmp_path, ffmpeg), headers={"Content-Type": "video/mp4"}),
    )

    with pytest.raises(MediaDownloadError, match="cannot write the download"):
        download(
            cdn.url("/v/reel.mp4"),
            kind="video",
            max_bytes=MB,
            timeout_s=5,
            tmp_dir=tmp_path / "no-such-folder",
        )


@pytest.mark.parametrize(
    "route",
    [
        Route(b"URL signature expired", 403, {"Content-Type": "text/plain"}),
        Route(b"nope", 500),
        Route(b"<html>", headers={"Content-Type": "text/html"}),
        Route(
            JPEG,
            headers={"Content-Type": "image/jpeg"},
            behaviour="short",
            content_length=10**5,
        ),
        Route(
            JPEG,
            headers={"Content-Type": "image/jpeg"},
            behaviour="reset",
            partial_bytes=5,
        ),
    ],
    ids=["expired", "500", "html", "short", "reset"],
)
def test_failures_never_echo_the_signed_query(cdn: CdnServer, route: Route) -> None:
    cdn.add("/v/x.jpg", route)

    with pytest.raises(MediaError) as caught:
        download(cdn.url("/v/x.jpg", SIGNED), kind="image", max_bytes=MB, timeout_s=5)

    text = f"{caught.value} {getattr(caught.value, 'details', '')}"
    assert "SECRETSIGNATURE" not in text
    assert "oe=" not in text


# --- magic bytes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (JPEG[:64], "jpeg"),
        (PNG[:64], "png"),
        (mf.encode(mf.photo(8, 8), "GIF")[:64], "gif"),
        (mf.encode(mf.photo(8, 8), "WEBP")[:64], "webp"),
        (mf.encode(mf.photo(8, 8), "AVIF")[:64], "avif"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heic"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "mov"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87", "webm"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska", "matroska"),
        (b"\x00\x00\x00\x10ftypzzzz\x00\x00\x00\x00", None),
        (b"BM" + b"\x00" * 62, None),
        (b"", None),
    ],
)
def test_sniff_names_formats_by_magic_bytes(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected
