"""Fixtures of the media tests: a loopback CDN, moto's S3 as R2, ffmpeg."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.media_fixtures import ffmpeg_exe
from devstack.media_servers import CdnServer, MotoS3
from housekeeper.media.storage import R2Storage

PUBLIC_URL = "https://media.example.test"


@pytest.fixture
def cdn() -> Iterator[CdnServer]:
    """A fresh CDN stand-in on 127.0.0.1 with no routes."""
    with CdnServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """moto's S3 server on 127.0.0.1, shared by the session."""
    with MotoS3() as server:
        yield server


@pytest.fixture(scope="session")
def r2_session(moto_s3: MotoS3) -> R2Storage:
    """One client for the session: building a boto3 client costs ~0.3 s."""
    return R2Storage(
        endpoint_url=moto_s3.endpoint_url,
        access_key_id=moto_s3.access_key_id,
        secret_access_key=moto_s3.secret_access_key,
        bucket="unused",
        public_url=PUBLIC_URL,
        max_attempts=1,
    )


@pytest.fixture
def r2(r2_session: R2Storage) -> R2Storage:
    """An `R2Storage` on a new, empty bucket of the moto server."""
    storage = copy.copy(r2_session)
    storage.bucket = f"media-{uuid.uuid4().hex[:12]}"
    # R2's region is `auto`; moto wants it named as the bucket's location.
    storage.client.create_bucket(
        Bucket=storage.bucket, CreateBucketConfiguration={"LocationConstraint": "auto"}
    )
    return storage


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel."""
    return ffmpeg_exe()


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """An empty folder for temporary media files."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder
