"""R2Storage against moto's S3 server, plus the wire-level checksum check."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore
import pytest
from botocore.awsrequest import AWSPreparedRequest

from devstack.media_servers import MotoS3
from housekeeper.config import load_settings
from housekeeper.errors import ConfigurationError, StorageError
from housekeeper.media.storage import (
    CACHE_CONTROL,
    R2Storage,
    object_key,
    sha256_hex,
)

HASH = "ab" * 32


class WireLog:
    """Every request a boto client sends, as it goes on the wire (signed)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> None:
        headers = {name.lower(): str(value) for name, value in request.headers.items()}
        self.requests.append((request.method, headers))

    def of(self, method: str) -> list[dict[str, str]]:
        return [headers for sent, headers in self.requests if sent == method]


@pytest.fixture
def wire(r2: R2Storage) -> Iterator[WireLog]:
    log = WireLog()
    r2.client.meta.events.register("before-send.s3", log)
    yield log
    r2.client.meta.events.unregister("before-send.s3", log)


def checksum_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in headers.items()
        if name.startswith("x-amz-checksum-")
        or name in ("x-amz-sdk-checksum-algorithm", "x-amz-trailer")
        or (name == "content-encoding" and "aws-chunked" in value)
    }


# --- keys and URLs -----------------------------------------------------------


def test_object_key_is_deterministic_from_source_row_position_and_hash() -> None:
    key = object_key("posts", 42, 3, HASH, "jpg")

    assert key == f"posts/42/3-{'ab' * 16}.jpg"
    assert object_key("/posts/", "42", 3, HASH.upper(), ".JPG") == key


def test_a_row_id_that_is_no_plain_token_is_hashed_into_one_segment() -> None:
    key = object_key("reels", "../../etc/passwd", 0, HASH, "mp4")

    assert key.startswith("reels/h")
    assert key.count("/") == 2
    assert key == object_key("reels", "../../etc/passwd", 0, HASH, "mp4")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("a/../b", 1, 0, HASH, "jpg"), "invalid key prefix"),
        (("posts", 1, -1, HASH, "jpg"), "position"),
        (("posts", 1, True, HASH, "jpg"), "position"),
        (("posts", 1, 0, "xyz", "jpg"), "content_hash"),
        (("posts", 1, 0, HASH, "j/pg"), "invalid extension"),
    ],
)
def test_object_key_refuses_bad_parts(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        object_key(*args)


def test_sha256_hex_of_bytes_and_of_a_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"media" * 1000)

    assert sha256_hex(path) == sha256_hex(b"media" * 1000)


def test_public_url_is_under_r2_public_url(r2: R2Storage) -> None:
    assert r2.public_url("posts/42/0-abc def.jpg") == (
        "https://media.example.test/posts/42/0-abc%20def.jpg"
    )


# --- the wire-level checksum case ------------------------------------------


def test_upload_carries_no_checksum_headers_with_the_pinned_boto3(
    r2: R2Storage, wire: WireLog, tmp_path: Path
) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00" * 5000)

    r2.put("posts/1/0-a.jpg", b"\xff\xd8\xff" + b"\x00" * 1000, "image/jpeg")
    r2.put("reels/1/0-b.mp4", path, "video/mp4")

    puts = wire.of("PUT")
    assert len(puts) == 2
    for headers in puts:
        assert checksum_headers(headers) == {}
        assert "authorization" in headers
    # Default checksums arrived in 1.36; the control test below shows them on.
    assert tuple(int(part) for part in boto3.__version__.split(".")[:2]) >= (1, 36)


def test_the_wire_check_would_see_botos_default_checksums(moto_s3: MotoS3) -> None:
    # The control: the same upload through a client with botocore's defaults
    # does carry checksum headers, so the test above can fail.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=moto_s3.endpoint_url,
        aws_access_key_id=moto_s3.access_key_id,
        aws_secret_access_key=moto_s3.secret_access_key,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )
    log = WireLog()
    client.meta.events.register("before-send.s3", log)
    client.create_bucket(Bucket="default-checksums")

    client.put_object(Bucket="default-checksums", Key="k", Body=b"x" * 1000)

    (put,) = log.of("PUT")[-1:]
    assert checksum_headers(put) != {}


# --- put, skip, verify -----------------------------------------------------------


def test_put_stores_content_type_and_long_cache_control(r2: R2Storage) -> None:
    body = b"\xff\xd8\xff" + b"\x01" * 2000

    stored = r2.put("posts/7/0-c.jpg", body, "image/jpeg")

    assert (stored.uploaded, stored.size_bytes) == (True, len(body))
    info = r2.verify("posts/7/0-c.jpg", len(body))
    assert info.content_type == "image/jpeg"
    assert info.cache_control == CACHE_CONTROL == "public, max-age=31536000, immutable"
    got = r2.client.get_object(Bucket=r2.bucket, Key="posts/7/0-c.jpg")
    assert got["Body"].read() == body


def test_put_of_a_file_uploads_its_content(r2: R2Storage, tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x02" * 3000)

    stored = r2.put("reels/9/0-d.mp4", path, "video/mp4")

    assert stored.size_bytes == path.stat().st_size
    got = r2.client.get_object(Bucket=r2.bucket, Key="reels/9/0-d.mp4")
    assert got["Body"].read() == path.read_bytes()
    assert got["ContentType"] == "video/mp4"


def test_put_skips_the_upload_when_the_same_size_is_already_there(
    r2: R2Storage, wire: WireLog
) -> None:
    body = b"\xff\xd8\xff" + b"\x03" * 500

    first = r2.put("posts/8/0-e.jpg", body, "image/jpeg")
    second = r2.put("posts/8/0-e.jpg", body, "image/jpeg")

    assert (first.uploaded, second.uploaded) == (True, False)
    assert len(wire.of("PUT")) == 1
    assert len(wire.of("HEAD")) == 2


def test_put_replaces_an_object_of_another_size(r2: R2Storage) -> None:
    r2.put("posts/8/0-f.jpg", b"short", "image/jpeg")

    replaced = r2.put("posts/8/0-f.jpg", b"a longer body", "image/jpeg")

    assert replaced.uploaded is True
    r2.verify("posts/8/0-f.jpg", len(b"a longer body"))


def test_verify_refuses_a_missing_object(r2: R2Storage) -> None:
    with pytest.raises(StorageError) as caught:
        r2.verify("posts/1/0-missing.jpg", 10)

    assert (
        str(caught.value) == "R2 object posts/1/0-missing.jpg is missing after upload"
    )
    assert (caught.value.status, caught.value.code) == (502, "storage_error")


def test_verify_refuses_a_size_mismatch(r2: R2Storage) -> None:
    r2.put("posts/1/0-g.jpg", b"12345", "image/jpeg")

    with pytest.raises(StorageError) as caught:
        r2.verify("posts/1/0-g.jpg", 6)

    assert str(caught.value) == "R2 object posts/1/0-g.jpg has 5 bytes, expected 6"


def test_a_missing_bucket_is_a_storage_error(r2: R2Storage) -> None:
    r2.bucket = "no-such-bucket"

    with pytest.raises(StorageError) as caught:
        r2.put("posts/1/0-h.jpg", b"x", "image/jpeg")

    assert (
        str(caught.value) == "R2 PUT of posts/1/0-h.jpg failed: NoSuchBucket (HTTP 404)"
    )


def test_an_unreachable_endpoint_is_a_storage_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = R2Storage(
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key_id="id",
        secret_access_key="never-logged-secret",
        bucket="media",
        max_attempts=1,
        connect_timeout_s=1,
    )

    with pytest.raises(StorageError) as caught:
        storage.put("posts/1/0-i.jpg", b"x", "image/jpeg")

    message = str(caught.value)
    assert message.startswith(
        "R2 HEAD of posts/1/0-i.jpg failed: EndpointConnectionError"
    )
    assert "never-logged-secret" not in message


# --- settings ------------------------------------------------------------------


def test_from_settings_names_every_missing_setting() -> None:
    settings = load_settings({"R2_ENDPOINT_URL": "http://127.0.0.1:9"})

    with pytest.raises(ConfigurationError) as caught:
        R2Storage.from_settings(settings)

    assert str(caught.value) == (
        "R2 storage needs R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET, "
        "R2_PUBLIC_URL"
    )


def test_from_settings_uses_the_account_endpoint_region_auto_and_lazy_checksums() -> (
    None
):
    settings = load_settings(
        {
            "R2_ACCOUNT_ID": "0123abcd",
            "R2_ACCESS_KEY_ID": "id",
            "R2_SECRET_ACCESS_KEY": "secret",
            "R2_BUCKET": "media",
            "R2_PUBLIC_URL": "https://media.example.test/",
            "MEDIA_CONCURRENCY": "8",
        }
    )

    storage = R2Storage.from_settings(settings)

    meta = storage.client.meta
    assert meta.endpoint_url == "https://0123abcd.r2.cloudflarestorage.com"
    assert meta.region_name == "auto"
    assert meta.config.request_checksum_calculation == "when_required"
    assert meta.config.response_checksum_validation == "when_required"
    assert meta.config.max_pool_connections == 16
    assert storage.public_url("a/b.jpg") == "https://media.example.test/a/b.jpg"
