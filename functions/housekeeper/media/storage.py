"""Cloudflare R2 through boto3: content-addressed uploads, verified by HEAD.

R2 speaks S3 but rejects or ignores parts of it. botocore 1.36 and newer add a
CRC checksum (an `x-amz-checksum-*` header or an aws-chunked trailer) to every
upload by default; the client here computes and validates checksums only where
an operation requires one. Region is `auto`, as R2 expects.

Keys are deterministic (`object_key`), so an upload that already happened - an
earlier run that died before updating its row - is found by HEAD and skipped,
and a row is only updated after HEAD confirms the object and its size.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from housekeeper.config import Settings
from housekeeper.errors import ConfigurationError, StorageError

logger = logging.getLogger(__name__)

CACHE_CONTROL = "public, max-age=31536000, immutable"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MAX_ATTEMPTS = 3

_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_ROW_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_HASH = re.compile(r"^[0-9a-f]{16,}$")
_EXTENSION = re.compile(r"^[a-z0-9]{1,8}$")
_HASH_CHARS = 32
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD says of a stored object."""

    key: str
    size_bytes: int
    content_type: str | None
    cache_control: str | None
    etag: str | None


@dataclass(frozen=True)
class StoredObject:
    """The outcome of `put`: `uploaded` is false when the object was already there."""

    key: str
    size_bytes: int
    uploaded: bool
    etag: str | None


def sha256_hex(body: bytes | Path) -> str:
    """The SHA-256 of bytes or of a file's content, as lowercase hex."""
    digest = hashlib.sha256()
    if isinstance(body, Path):
        with body.open("rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
    else:
        digest.update(body)
    return digest.hexdigest()


def object_key(
    prefix: str, row_id: object, position: int, content_hash: str, ext: str
) -> str:
    """`{prefix}/{row_id}/{position}-{hash}.{ext}`: the same inputs, the same key.

    A row id that is not a plain token (letters, digits, `.`, `_`, `-`) is
    replaced by `h` and a hash of it, so that no id can add a path segment.
    Only the first 32 hex characters of `content_hash` are used.
    """
    clean_prefix = prefix.strip("/")
    if not _PREFIX.match(clean_prefix) or ".." in clean_prefix.split("/"):
        raise ValueError(f"invalid key prefix {prefix!r}")
    row = str(row_id)
    if not _ROW_ID.match(row):
        row = "h" + hashlib.sha256(row.encode()).hexdigest()[:_HASH_CHARS]
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"position must be a non-negative integer, not {position!r}")
    digest = content_hash.lower()
    if not _HASH.match(digest):
        raise ValueError("content_hash must be at least 16 hex characters")
    extension = ext.lower().lstrip(".")
    if not _EXTENSION.match(extension):
        raise ValueError(f"invalid extension {ext!r}")
    return f"{clean_prefix}/{row}/{position}-{digest[:_HASH_CHARS]}.{extension}"


def client_config(
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
    max_pool_connections: int = 10,
) -> Config:
    """The botocore configuration R2 needs: checksums only when required."""
    return Config(
        region_name="auto",
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        max_pool_connections=max_pool_connections,
        # Path-style works on R2 and on any local S3 stand-in; virtual hosts
        # would need DNS for bucket subdomains.
        s3={"addressing_style": "path"},
    )


class R2Storage:
    """One R2 bucket: upload, HEAD verification and public URLs."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        access_key_id: str,
        secret_access_key: str,
        bucket: str,
        public_url: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
        max_pool_connections: int = 10,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.public_base_url = public_url.rstrip("/") if public_url else None
        # A session of its own: the default session is shared process state
        # and would pick up AWS profiles from the environment.
        session = boto3.session.Session()
        self.client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name="auto",
            config=client_config(
                connect_timeout_s=connect_timeout_s,
                read_timeout_s=read_timeout_s,
                max_attempts=max_attempts,
                max_pool_connections=max_pool_connections,
            ),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> R2Storage:
        """The bucket the settings describe; `ConfigurationError` names what is unset.

        Pool size follows `MEDIA_CONCURRENCY` so uploads in flight never queue.
        """
        endpoint = settings.r2_endpoint
        key_id = settings.r2_access_key_id
        secret = settings.r2_secret_access_key
        bucket = settings.r2_bucket
        if not (endpoint and key_id and secret and bucket and settings.r2_public_url):
            missing = [
                name
                for name, value in (
                    ("R2_ACCOUNT_ID or R2_ENDPOINT_URL", endpoint),
                    ("R2_ACCESS_KEY_ID", key_id),
                    ("R2_SECRET_ACCESS_KEY", secret),
                    ("R2_BUCKET", bucket),
                    ("R2_PUBLIC_URL", settings.r2_public_url),
                )
                if not value
            ]
            raise ConfigurationError(f"R2 storage needs {', '.join(missing)}")
        return cls(
            endpoint_url=endpoint,
            access_key_id=key_id,
            secret_access_key=secret,
            bucket=bucket,
            public_url=settings.r2_public_url,
            max_pool_connections=max(10, settings.media_concurrency * 2),
        )

    def public_url(self, key: str) -> str:
        """The URL under `R2_PUBLIC_URL` at which the object is served."""
        if not self.public_base_url:
            raise ConfigurationError("R2_PUBLIC_URL is not set")
        return f"{self.public_base_url}/{quote(key, safe='/')}"

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and headers, or None when it does not exist."""
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise _storage_error("HEAD", key, exc) from exc
        except BotoCoreError as exc:
            raise _storage_error("HEAD", key, exc) from exc
        return ObjectInfo(
            key=key,
            size_bytes=int(response["ContentLength"]),
            content_type=response.get("ContentType"),
            cache_control=response.get("CacheControl"),
            etag=response.get("ETag"),
        )

    def put(
        self,
        key: str,
        body: bytes | Path,
        content_type: str,
        *,
        cache_control: str = CACHE_CONTROL,
    ) -> StoredObject:
        """Upload bytes or a file, unless an object of the same size is at `key`.

        Keys carry a hash of the content, so the same key with the same size is
        the same object, uploaded by an earlier run.
        """
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        existing = self.head(key)
        if existing is not None and existing.size_bytes == size:
            logger.debug("R2 object %s already stored (%d bytes)", key, size)
            return StoredObject(
                key=key, size_bytes=size, uploaded=False, etag=existing.etag
            )

        try:
            if isinstance(body, Path):
                with body.open("rb") as handle:
                    response = self._put_object(
                        key, handle, size, content_type, cache_control
                    )
            else:
                response = self._put_object(
                    key, body, size, content_type, cache_control
                )
        except OSError as exc:
            raise StorageError(
                f"R2 PUT of {key} failed: cannot read the upload ({exc.strerror})",
                details={"key": key},
            ) from exc
        logger.debug("R2 object %s uploaded (%d bytes)", key, size)
        return StoredObject(
            key=key, size_bytes=size, uploaded=True, etag=response.get("ETag")
        )

    def verify(self, key: str, size_bytes: int) -> ObjectInfo:
        """HEAD the object and require its size: rows are updated only after this."""
        info = self.head(key)
        if info is None:
            raise StorageError(
                f"R2 object {key} is missing after upload", details={"key": key}
            )
        if info.size_bytes != size_bytes:
            raise StorageError(
                f"R2 object {key} has {info.size_bytes} bytes, expected {size_bytes}",
                details={"key": key, "size_bytes": info.size_bytes},
            )
        return info

    def _put_object(
        self, key: str, body: Any, size: int, content_type: str, cache_control: str
    ) -> dict[str, Any]:
        try:
            response: dict[str, Any] = self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=size,
                ContentType=content_type,
                CacheControl=cache_control,
            )
        except (ClientError, BotoCoreError) as exc:
            raise _storage_error("PUT", key, exc) from exc
        return response


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code", ""))


def _storage_error(operation: str, key: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        cause = f"{_error_code(exc) or 'error'} (HTTP {status})"
    else:
        cause = f"{type(exc).__name__}: {exc}"
    return StorageError(
        f"R2 {operation} of {key} failed: {cause}", details={"key": key}
    )
