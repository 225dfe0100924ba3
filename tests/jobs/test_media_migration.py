"""migrate-cdn-to-r2 end to end: a loopback CDN, moto's S3 as R2, the real SQL."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from PIL import Image

from devstack import media_fixtures as mf
from devstack.emulator import FUNCTIONS_DIR
from devstack.media_demo import (
    EXPIRED_BODY,
    EXPIRED_OE,
    VALID_OE,
    cdn_path,
    signed_query,
)
from devstack.media_servers import CdnServer, Route
from devstack.postgres import free_port
from housekeeper.config import load_settings
from housekeeper.db.postgres import PostgresDatabase
from housekeeper.errors import DatabaseUnavailableError
from housekeeper.http import Params
from housekeeper.jobs import media_migration
from housekeeper.media import download as download_module
from housekeeper.media.storage import ObjectInfo, R2Storage
from housekeeper.media.videos import mp4_top_level_boxes, probe_video
from housekeeper.runs import RunContext
from tests.postgrest_standin import PostgrestStandIn

# The bucket URL of the `r2_env` fixture.
PUBLIC_URL = "https://media.example.test"
SIGNATURE_MARK = "oh=00_"


@pytest.fixture
def cdn() -> Iterator[CdnServer]:
    """A CDN stand-in on 127.0.0.1."""
    with CdnServer() as server:
        yield server


@dataclass
class Media:
    """The app tables, the CDN and the bucket of one test."""

    conn: psycopg.Connection[Any]
    cdn: CdnServer
    storage: R2Storage

    def serve(
        self,
        name: str,
        body: bytes,
        content_type: str = "image/jpeg",
        *,
        status: int = 200,
        oe: str = VALID_OE,
        route: Route | None = None,
    ) -> str:
        """Serve `body` on a CDN-shaped path; returns its signed URL."""
        path = cdn_path("post", name, "jpg")
        self.cdn.add(path, route or Route(body, status, {"Content-Type": content_type}))
        return self.cdn.url(path, signed_query(path, oe=oe))

    def creators(self, rows: list[tuple[int, str | None]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "insert into instagram_creators values (%s, %s, %s)",
                [(i, f"creator{i}", url) for i, url in rows],
            )

    def posts(self, rows: list[tuple[int, list[str]]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany("insert into instagram_posts values (%s, 1, %s)", rows)

    def reels(self, rows: list[tuple[int, str]]) -> None:
        with self.conn.cursor() as cursor:
            cursor.executemany("insert into instagram_reels values (%s, 1, %s)", rows)

    def pic(self, row_id: int) -> str | None:
        row = self.conn.execute(
            "select profile_pic_url from instagram_creators where id = %s", (row_id,)
        ).fetchone()
        return row[0] if row else None

    def state(
        self, source: str, row_id: int, position: int = 0
    ) -> dict[str, Any] | None:
        row = self.conn.execute(
            "select status, attempts, last_error, next_attempt_at > now(),"
            " claimed_until, r2_key, bytes_in, bytes_out"
            " from housekeeper.media_items"
            " where source = %s and row_id = %s and position = %s",
            (source, str(row_id), position),
        ).fetchone()
        if row is None:
            return None
        keys = ("status", "attempts", "last_error", "waiting", "claimed_until")
        keys += ("r2_key", "bytes_in", "bytes_out")
        return dict(zip(keys, row, strict=True))

    def keys(self) -> list[str]:
        listing = self.storage.client.list_objects_v2(Bucket=self.storage.bucket)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def get(self, key: str) -> dict[str, Any]:
        return dict(self.storage.client.get_object(Bucket=self.storage.bucket, Key=key))


def path_of(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0]


@pytest.fixture
def media(conn, cdn, r2_env, r2_server, set_env, clean_ledger, leak_guard):
    """The app tables, a new bucket, the CDN, and the settings for all three."""
    set_env(MEDIA_CDN_HOSTS="127.0.0.1", MEDIA_CONCURRENCY="4")
    yield Media(conn, cdn, r2_env)
    # Neither the R2 secret nor a URL signature may reach a log or a response.
    leak_guard.check((r2_server.secret_access_key, SIGNATURE_MARK))


def migrate(call, **params: Any) -> dict[str, Any]:
    reply = call("migrate_cdn_to_r2", json=params)
    assert reply.status == 200, reply.text
    body: dict[str, Any] = reply.json
    return body


def jpeg(width: int = 48, height: int = 48, seed: int = 0) -> bytes:
    return mf.photo_jpeg(width, height, noise=0.05, seed=seed)


def test_expired_oe_url_answered_403_is_marked_expired_and_waits_for_a_new_url(
    media, call
):
    url = media.serve("expired", EXPIRED_BODY, "text/plain", status=403, oe=EXPIRED_OE)
    assert "oe=6A2F427E" in url
    media.creators([(1, url)])

    first = migrate(call)

    assert first["results"]["totals"]["expired"] == 1
    assert first["results"]["totals"]["migrated"] == 0
    assert media.state("creators", 1)["status"] == "expired"
    assert media.pic(1) == url
    assert media.keys() == []
    sample = first["results"]["error_samples"][0]
    assert sample["source"] == "creators"
    assert sample["row_id"] == "1"
    assert sample["position"] == 0
    assert sample["status"] == "expired"
    assert "expired" in sample["reason"]
    asked = len(media.cdn.requests_for(path_of(url)))
    assert asked <= 1

    second = migrate(call)

    assert second["results"]["totals"]["total"] == 0
    assert len(media.cdn.requests_for(path_of(url))) == asked
    assert media.state("creators", 1)["status"] == "expired"

    fresh = media.serve("renewed", jpeg())
    media.conn.execute(
        "update instagram_creators set profile_pic_url = %s where id = 1", (fresh,)
    )
    third = migrate(call)

    assert third["results"]["totals"]["migrated"] == 1
    assert media.pic(1).startswith(PUBLIC_URL + "/profiles/1/0-")
    assert media.state("creators", 1)["status"] == "migrated"
    assert media.state("creators", 1)["attempts"] == 1


def test_cdn_403_url_signature_expired_marks_the_row_expired_nothing_uploaded(
    media, call
):
    url = media.serve("revoked", EXPIRED_BODY, "text/plain", status=403)
    media.creators([(1, url)])

    body = migrate(call)

    assert body["results"]["totals"]["expired"] == 1
    assert len(media.cdn.requests_for(path_of(url))) == 1
    assert media.keys() == []
    assert media.pic(1) == url
    state = media.state("creators", 1)
    assert state["status"] == "expired"
    assert state["waiting"] is None
    assert "the signed URL has expired (HTTP 403)" in state["last_error"]

    assert migrate(call)["results"]["totals"]["total"] == 0
    assert len(media.cdn.requests_for(path_of(url))) == 1


def test_rgba_png_with_transparent_corner_becomes_a_white_cornered_jpeg_in_r2(
    media, call
):
    url = media.serve("transparent", mf.rgba_png(64, 16), "image/png")
    media.creators([(7, url)])

    body = migrate(call)

    assert body["status"] == "success"
    creators = body["results"]["sources"]["creators"]
    assert creators["migrated"] == 1
    assert creators["bytes_in"] == len(mf.rgba_png(64, 16))
    (key,) = media.keys()
    assert key.startswith("profiles/7/0-")
    assert key.endswith(".jpg")
    assert media.pic(7) == f"{PUBLIC_URL}/{key}"
    stored = media.get(key)
    data = stored["Body"].read()
    assert stored["ContentType"] == "image/jpeg"
    assert stored["CacheControl"] == "public, max-age=31536000, immutable"
    assert len(data) <= 300 * 1024
    assert creators["bytes_out"] == len(data)
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    assert image.size == (64, 64)
    corner = image.convert("RGB").getpixel((2, 2))
    assert min(corner) >= 250
    red = image.convert("RGB").getpixel((48, 48))
    assert red[0] > 150
    assert red[1] < 80
    state = media.state("creators", 7)
    assert state["status"] == "migrated"
    assert state["r2_key"] == key
    assert state["bytes_out"] == len(data)
    assert state["claimed_until"] is None


def test_png_claiming_20000x20000_is_refused_as_a_bomb_and_the_batch_goes_on(
    media, call
):
    bomb = media.serve("bomb", mf.png_claiming(20000, 20000), "image/png")
    good = [media.serve(f"good{i}", jpeg(seed=i)) for i in range(3)]
    media.posts([(1, [good[0], bomb, good[1]]), (2, [good[2]])])

    body = migrate(call)

    posts = body["results"]["sources"]["posts"]
    assert (posts["migrated"], posts["failed"], posts["total"]) == (3, 1, 4)
    (sample,) = body["results"]["error_samples"]
    assert (sample["source"], sample["row_id"], sample["position"]) == ("posts", "1", 1)
    assert sample["reason"].startswith("image refused as a decompression bomb")
    urls = media.conn.execute(
        "select image_urls from instagram_posts order by id"
    ).fetchall()
    assert urls[0][0][1] == bomb
    assert urls[0][0][0].startswith(f"{PUBLIC_URL}/posts/1/0-")
    assert urls[0][0][2].startswith(f"{PUBLIC_URL}/posts/1/2-")
    assert urls[1][0][0].startswith(f"{PUBLIC_URL}/posts/2/0-")
    state = media.state("posts", 1, 1)
    assert state["status"] == "failed"
    assert state["attempts"] == 1
    assert state["waiting"] is True


@pytest.fixture(scope="module")
def portrait_clip(tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("clip")
    path = mf.make_video(
        folder / "portrait.mp4", width=1080, height=1920, duration_s=3, audio=False
    )
    return path.read_bytes()


def test_3s_1080x1920_h264_without_audio_becomes_a_valid_video_only_mp4(
    media, call, portrait_clip, tmp_path
):
    url = media.serve("reel", portrait_clip, "video/mp4")
    media.reels([(3, url)])

    body = migrate(call, media_type="reels")

    reels = body["results"]["sources"]["reels"]
    assert reels["migrated"] == 1, body
    assert list(body["results"]["sources"]) == ["reels"]
    (key,) = media.keys()
    assert key.startswith("reels/3/0-")
    assert key.endswith(".mp4")
    stored = media.get(key)
    assert stored["ContentType"] == "video/mp4"
    output = tmp_path / "out.mp4"
    output.write_bytes(stored["Body"].read())
    assert output.stat().st_size <= 1.5 * 1024 * 1024
    probe = probe_video(output)
    assert probe.codec == "h264"
    assert probe.has_audio is False
    assert (probe.width, probe.height) == (720, 1280)
    assert probe.pixel_format == "yuv420p"
    assert abs((probe.duration_s or 0) - 3) < 0.2
    boxes = mp4_top_level_boxes(output)
    assert boxes.index("moov") < boxes.index("mdat")
    assert (
        media.conn.execute(
            "select video_url from instagram_reels where id = 3"
        ).fetchone()[0]
        == f"{PUBLIC_URL}/{key}"
    )
    assert reels["over_target"] == 0


def test_ten_failing_rows_first_do_not_stop_a_batch_size_25_run(media, call):
    body_bytes = jpeg(24, 24)
    rows = [(i, media.serve(f"gone{i}", b"", status=404)) for i in range(1, 11)]
    rows += [(i, media.serve(f"ok{i}", body_bytes)) for i in range(11, 111)]
    media.creators(rows)

    body = migrate(call, batch_size=25)

    creators = body["results"]["sources"]["creators"]
    assert creators["migrated"] == 100
    assert creators["failed"] == 10
    assert creators["total"] == 110
    assert creators["batches"] == 5
    assert body["results"]["totals"]["migrated"] == 100
    samples = body["results"]["error_samples"]
    assert sorted(int(s["row_id"]) for s in samples) == list(range(1, 11))
    assert all(s["reason"].endswith(": HTTP 404") for s in samples)
    assert all("?" not in s["reason"] for s in samples)
    remaining = media.conn.execute(
        "select count(*) from instagram_creators where profile_pic_url not like %s",
        (PUBLIC_URL + "/%",),
    ).fetchone()[0]
    assert remaining == 10
    assert len(media.keys()) == 100
    for row_id in (1, 10):
        state = media.state("creators", row_id)
        assert (state["status"], state["attempts"], state["waiting"]) == (
            "failed",
            1,
            True,
        )
        assert state["last_error"].endswith(": HTTP 404")


def test_a_row_whose_url_changed_mid_flight_is_not_overwritten(
    media, call, monkeypatch, pg
):
    original = media.serve("original", jpeg())
    replacement = media.serve("replacement", jpeg(seed=3))
    media.creators([(1, original)])
    real_put = R2Storage.put

    def put_then_change_row(self: R2Storage, key: str, *args: Any, **kw: Any) -> Any:
        stored = real_put(self, key, *args, **kw)
        with psycopg.connect(pg.url, autocommit=True) as other:
            other.execute(
                "update instagram_creators set profile_pic_url = %s"
                " where id = 1 and profile_pic_url = %s",
                (replacement, original),
            )
        return stored

    monkeypatch.setattr(R2Storage, "put", put_then_change_row)
    body = migrate(call)

    totals = body["results"]["totals"]
    # The first run skipped the stale URL, then found the new one and moved it.
    assert (totals["skipped"], totals["migrated"]) == (1, 1)
    keys = media.keys()
    assert len(keys) == 2
    final = media.pic(1)
    assert final.startswith(f"{PUBLIC_URL}/profiles/1/0-")
    orphan = [key for key in keys if final != f"{PUBLIC_URL}/{key}"]
    assert len(orphan) == 1
    (sample,) = body["results"]["error_samples"]
    assert sample["status"] == "skipped"
    assert "changed during the migration" in sample["reason"]


def test_a_row_is_not_updated_when_head_does_not_confirm_the_upload(
    media, call, monkeypatch
):
    url = media.serve("liar", jpeg())
    media.creators([(1, url)])
    real_head = R2Storage.head

    def head_with_another_size(self: R2Storage, key: str) -> ObjectInfo | None:
        info = real_head(self, key)
        if info is None:
            return None
        return ObjectInfo(key, info.size_bytes - 1, info.content_type, None, None)

    monkeypatch.setattr(R2Storage, "head", head_with_another_size)
    body = migrate(call)

    assert body["results"]["totals"]["failed"] == 1
    assert body["results"]["totals"]["migrated"] == 0
    assert media.pic(1) == url
    state = media.state("creators", 1)
    assert state["status"] == "failed"
    assert "failed verification" in state["last_error"]
    assert state["r2_key"] is None


def test_a_second_run_finds_nothing_to_do(media, call):
    media.creators([(1, media.serve("a", jpeg())), (2, media.serve("b", jpeg(seed=1)))])
    media.posts([(1, [media.serve("c", jpeg(seed=2)), media.serve("d", jpeg(seed=3))])])

    first = migrate(call)
    keys = media.keys()
    rows = media.conn.execute(
        "select profile_pic_url from instagram_creators order by id"
    ).fetchall()
    second = migrate(call)

    assert first["results"]["totals"]["migrated"] == 4
    assert first["message"] == "migrated 4 of 4 items (0 failed, 0 expired, 0 skipped)"
    assert second["status"] == "success"
    assert second["message"] == "nothing to migrate"
    assert second["results"]["totals"] == {
        "total": 0,
        "migrated": 0,
        "skipped": 0,
        "failed": 0,
        "expired": 0,
        "bytes_in": 0,
        "bytes_out": 0,
    }
    assert media.keys() == keys
    assert (
        rows
        == media.conn.execute(
            "select profile_pic_url from instagram_creators order by id"
        ).fetchall()
    )


def test_dry_run_counts_eligible_items_and_changes_nothing(media, call):
    media.creators([(1, media.serve("a", jpeg())), (2, "https://elsewhere.test/x.jpg")])
    media.posts([(1, [media.serve("b", jpeg()), media.serve("c", jpeg())])])

    body = migrate(call, dry_run=True)

    assert body["status"] == "dry_run"
    assert body["results"]["totals"] == {"eligible": 3}
    assert body["results"]["sources"]["creators"]["eligible"] == 1
    assert body["results"]["sources"]["posts"]["eligible"] == 2
    assert body["message"] == "dry run: 3 items would be migrated"
    assert media.keys() == []
    assert media.cdn.requests == []
    assert (
        media.conn.execute("select count(*) from housekeeper.media_items").fetchone()[0]
        == 0
    )
    assert media.pic(1).startswith("http://127.0.0.1")


def test_without_ffmpeg_videos_fail_with_a_clear_reason_and_images_go_on(
    media, call, monkeypatch, tmp_path
):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    video = media.serve("clip", b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    media.reels([(1, video)])
    media.creators([(1, media.serve("pic", jpeg()))])

    body = migrate(call)

    sources = body["results"]["sources"]
    assert sources["creators"]["migrated"] == 1
    assert sources["reels"]["failed"] == 1
    (sample,) = body["results"]["error_samples"]
    assert sample["source"] == "reels"
    assert sample["reason"].startswith("ffmpeg is not available")
    assert media.cdn.requests_for(path_of(video)) == []
    assert media.state("reels", 1)["status"] == "failed"


def test_storage_outage_answers_502_with_partial_counts_and_releases_claims(
    media, call, set_env
):
    media.creators([(i, media.serve(f"p{i}", jpeg())) for i in range(1, 4)])
    set_env(R2_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    reply = call("migrate_cdn_to_r2", json={})

    assert reply.status == 502, reply.text
    body = reply.json
    assert body["error"]["code"] == "storage_error"
    assert body["status"] == "failed"
    assert body["results"]["totals"]["migrated"] == 0
    assert body["results"]["sources"]["creators"]["status"] == "failed"
    assert (
        media.conn.execute(
            "select count(*) from housekeeper.media_items"
            " where claimed_until is not null"
        ).fetchone()[0]
        == 0
    )
    assert all(media.pic(i).startswith("http://127.0.0.1") for i in (1, 2, 3))
    run = media.conn.execute(
        "select status from housekeeper.runs where job = 'migrate-cdn-to-r2'"
    ).fetchone()
    assert run == ("failed",)


def test_database_failure_mid_run_answers_503_with_the_counts_reached(
    media, call, monkeypatch
):
    media.creators([(i, media.serve(f"p{i}", jpeg(seed=i))) for i in range(1, 4)])
    real_swap = PostgresDatabase.media_swap
    calls: list[int] = []

    def swap_then_fail(self: PostgresDatabase, *args: Any) -> bool:
        calls.append(1)
        if len(calls) > 1:
            raise DatabaseUnavailableError("database connection failed: gone")
        return real_swap(self, *args)

    monkeypatch.setattr(PostgresDatabase, "media_swap", swap_then_fail)
    reply = call("migrate_cdn_to_r2", json={})

    assert reply.status == 503, reply.text
    assert reply.json["error"]["code"] == "database_unavailable"
    assert reply.json["results"]["totals"]["migrated"] == 1
    assert reply.json["results"]["totals"]["total"] == 1


def test_without_r2_settings_the_job_answers_500_naming_them_and_health_works(
    media, call, set_env
):
    set_env(R2_ENDPOINT_URL=None, R2_BUCKET=None)

    reply = call("migrate_cdn_to_r2", json={})

    assert reply.status == 500
    assert reply.json["error"] == {
        "code": "configuration_error",
        "message": "migrate-cdn-to-r2 needs R2 storage; not set: "
        "R2_ACCOUNT_ID or R2_ENDPOINT_URL, R2_BUCKET",
    }
    health = call("health", method="GET", token=None)
    assert health.status == 200
    assert "migrate-cdn-to-r2" in health.json["available_jobs"]


@pytest.mark.parametrize(
    ("params", "parameter", "message"),
    [
        (
            {"media_type": "stories"},
            "media_type",
            "media_type must be one of profile, posts, reels, all",
        ),
        (
            {"batch_size": 0},
            "batch_size",
            "batch_size must be an integer from 1 to 500",
        ),
        (
            {"batch_size": 501},
            "batch_size",
            "batch_size must be an integer from 1 to 500",
        ),
        ({"dry_run": "maybe"}, "dry_run", "dry_run must be true or false"),
        ({"batchsize": 5}, "batchsize", "unknown parameter 'batchsize'"),
    ],
)
def test_invalid_parameters_are_refused_before_any_work(
    media, call, params, parameter, message
):
    media.creators([(1, media.serve("a", jpeg()))])

    reply = call("migrate_cdn_to_r2", json=params)

    assert reply.status == 400
    assert reply.json["error"] == {
        "code": "invalid_parameter",
        "message": message,
        "parameter": parameter,
    }
    assert media.cdn.requests == []
    assert (
        media.conn.execute("select count(*) from housekeeper.runs").fetchone()[0] == 0
    )


def test_media_type_profile_only_touches_the_creators(media, call):
    media.creators([(1, media.serve("a", jpeg()))])
    media.posts([(1, [media.serve("b", jpeg())])])

    body = migrate(call, media_type="profile")

    assert list(body["results"]["sources"]) == ["creators"]
    assert body["results"]["totals"]["migrated"] == 1
    assert media.conn.execute(
        "select image_urls[1] like 'http://127.0.0.1%' from instagram_posts"
    ).fetchone()[0]


def test_time_budget_stops_with_partial_and_releases_what_it_did_not_reach(
    media, call, set_env
):
    set_env(MEDIA_CONCURRENCY="1")
    data = jpeg()
    slow = Route(
        data,
        200,
        # The drip ends by closing the connection; saying so keeps the
        # client from reusing it for the next item.
        {"Content-Type": "image/jpeg", "Connection": "close"},
        behaviour="drip",
        drip_bytes=len(data) // 3 + 1,
        drip_interval_s=0.2,
    )
    media.creators(
        [(i, media.serve(f"slow{i}", data, route=slow)) for i in range(1, 9)]
    )

    body = migrate(call, time_budget_s=1, batch_size=2)

    assert body["status"] == "partial"
    assert body["message"].endswith("time budget reached, the next run continues")
    creators = body["results"]["sources"]["creators"]
    assert creators["status"] == "partial"
    assert 1 <= creators["migrated"] <= 4
    assert (
        media.conn.execute(
            "select count(*) from housekeeper.media_items"
            " where claimed_until is not null"
        ).fetchone()[0]
        == 0
    )
    left = media.conn.execute(
        "select count(*) from instagram_creators where profile_pic_url like 'http:%'"
    ).fetchone()[0]
    assert left == 8 - creators["migrated"]

    rest = migrate(call)
    assert rest["results"]["totals"]["migrated"] == left


def test_loading_the_job_imports_neither_pillow_nor_boto3_nor_httpx():
    code = (
        "import sys, main\n"
        "from housekeeper.jobs import load_job\n"
        "load_job('migrate-cdn-to-r2')\n"
        "names = ('PIL', 'boto3', 'botocore', 'httpx')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=FUNCTIONS_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(FUNCTIONS_DIR)},
    )
    assert result.stdout.strip() == ""


def test_the_job_gives_the_same_answers_over_the_supabase_transport(
    media, call, set_env, pg, leak_guard
):
    standin = PostgrestStandIn(
        pg.url, "media-standin-jwt-secret-for-tests-0a9c1e"
    ).start()
    service_key = standin.key("service_role")
    try:
        set_env(
            DATABASE_URL=None,
            SUPABASE_URL=standin.url,
            SUPABASE_SERVICE_ROLE_KEY=service_key,
        )
        bomb = media.serve("bomb", mf.png_claiming(20000, 20000), "image/png")
        media.creators(
            [(1, media.serve("a", jpeg())), (2, media.serve("b", jpeg(seed=1)))]
        )
        media.posts([(5, [media.serve("c", jpeg(seed=2)), bomb])])

        dry = migrate(call, dry_run=True)
        first = migrate(call)
        second = migrate(call)
    finally:
        standin.stop()

    assert dry["results"]["totals"] == {"eligible": 4}
    totals = first["results"]["totals"]
    assert (totals["migrated"], totals["failed"], totals["total"]) == (3, 1, 4)
    assert second["message"] == "nothing to migrate"
    assert media.pic(2).startswith(f"{PUBLIC_URL}/profiles/2/0-")
    urls = media.conn.execute("select image_urls from instagram_posts").fetchone()[0]
    assert urls[0].startswith(f"{PUBLIC_URL}/posts/5/0-")
    assert urls[1] == bomb
    assert media.state("posts", 5, 1)["status"] == "failed"
    leak_guard.check((service_key,))


def test_two_overlapping_runs_never_process_the_same_item(media, env, pg):
    # The run lock keeps a second run out; this drives two runs past it, as
    # a run that outlived its lease would, to show the item claims hold alone.
    urls = [media.serve(f"p{i}", jpeg(seed=i)) for i in range(1, 31)]
    media.creators(list(enumerate(urls, start=1)))
    settings = load_settings(env)
    params = media_migration.parse_params(Params({"batch_size": 3}), settings)
    barrier = threading.Barrier(2)
    outcomes: list[Any] = []

    def one_run() -> None:
        db = PostgresDatabase(pg.url)
        ctx = RunContext(settings, db, str(uuid.uuid4()), time.monotonic() + 60)
        try:
            barrier.wait()
            outcomes.append(media_migration.run(ctx, params))
        except BaseException as exc:  # reported by the main thread
            outcomes.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    totals = [outcome.results["totals"] for outcome in outcomes]
    assert sum(t["total"] for t in totals) == 30
    assert sum(t["migrated"] for t in totals) == 30
    assert all(t["total"] > 0 for t in totals)
    assert all(len(media.cdn.requests_for(path_of(url))) == 1 for url in urls)
    attempts = media.conn.execute(
        "select attempts, count(*) from housekeeper.media_items group by 1"
    ).fetchall()
    assert attempts == [(1, 30)]
    assert len(media.keys()) == 30


def test_an_unexpected_error_fails_only_its_item_and_never_quotes_the_signature(
    media, call, monkeypatch
):
    odd = media.serve("odd", jpeg())
    media.creators([(1, odd), (2, media.serve("fine", jpeg(seed=1)))])
    real_download = download_module.download

    def choking_download(url: str, **options: Any) -> Any:
        if "/odd_" in url:
            raise RuntimeError(f"parser choked on {url}")
        return real_download(url, **options)

    monkeypatch.setattr(download_module, "download", choking_download)
    body = migrate(call)

    totals = body["results"]["totals"]
    assert (totals["migrated"], totals["failed"]) == (1, 1)
    (sample,) = body["results"]["error_samples"]
    assert sample["row_id"] == "1"
    assert sample["reason"] == (
        f"internal error: RuntimeError: parser choked on {odd.split('?')[0]}"
    )
    assert media.pic(1) == odd
    assert media.state("creators", 1)["status"] == "failed"


def test_a_source_whose_table_is_missing_answers_500_naming_it(media, call, set_env):
    set_env(
        MEDIA_SOURCES='[{"name": "avatars", "table": "app_users", '
        '"url_column": "avatar_url", "kind": "image", "media_type": "profile"}]'
    )

    reply = call("migrate_cdn_to_r2", json={"media_type": "profile"})

    assert reply.status == 500
    assert reply.json["error"] == {
        "code": "configuration_error",
        "message": "table public.app_users does not exist",
    }
    assert media.keys() == []


# Storage and CDN faults: the answer says what happened, the ledger records it,
# no row points at an object that does not exist, and the next run completes.

PUBLIC_URL = "https://media.example.test"


class _BrokenStorage(BaseHTTPRequestHandler):
    """An S3 endpoint that fails: `500` answers every request with an error,
    `vanish` accepts an upload's first bytes and then drops the connection."""

    mode = "500"

    def _fail(self) -> None:
        if self.mode == "vanish" and self.command == "PUT":
            self.rfile.read(16)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
            return
        if self.command == "HEAD":
            self.send_response(404 if self.mode == "vanish" else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"<Error><Code>InternalError</Code><Message>boom</Message></Error>"
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _fail  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet: the test reads answers, not access logs."""


@pytest.fixture
def broken_storage(request) -> Iterator[str]:
    """An S3 endpoint on 127.0.0.1 that fails the way `request.param` says."""
    handler = type("Handler", (_BrokenStorage,), {"mode": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _rows_point_only_at_existing_objects(media) -> None:
    keys = set(media.keys())
    for (url,) in media.conn.execute("select profile_pic_url from instagram_creators"):
        if url.startswith(PUBLIC_URL):
            assert url.removeprefix(PUBLIC_URL + "/") in keys


@pytest.mark.parametrize("broken_storage", ["500", "vanish"], indirect=True)
def test_storage_failing_then_back_next_run_completes(
    media, call, set_env, env, broken_storage
):
    media.creators([(i, media.serve(f"s{i}", jpeg(seed=i))) for i in range(1, 4)])
    working = env["R2_ENDPOINT_URL"]
    set_env(R2_ENDPOINT_URL=broken_storage)

    failed = call("migrate_cdn_to_r2", json={})

    assert failed.status == 502, failed.text
    assert failed.json["error"]["code"] == "storage_error"
    assert all(media.pic(i).startswith("http://127.0.0.1") for i in (1, 2, 3))
    _rows_point_only_at_existing_objects(media)
    ledger = media.conn.execute(
        "select status, error from housekeeper.runs where job = 'migrate-cdn-to-r2'"
    ).fetchall()
    assert [status for status, _ in ledger] == ["failed"]

    set_env(R2_ENDPOINT_URL=working)
    body = migrate(call)
    assert body["results"]["totals"]["migrated"] == 3
    assert all(media.pic(i).startswith(PUBLIC_URL) for i in (1, 2, 3))
    _rows_point_only_at_existing_objects(media)


@pytest.mark.parametrize("behaviour", ["hang", "reset", "short"])
def test_cdn_fault_fails_one_item_and_a_later_run_completes_it(
    media, call, set_env, behaviour
):
    set_env(MEDIA_DOWNLOAD_TIMEOUT_S="1", MEDIA_RETRY_BASE_S="1")
    body = jpeg(seed=7)
    bad = media.serve(
        "flaky",
        body,
        route=Route(
            body,
            headers={"Content-Type": "image/jpeg", "Connection": "close"},
            behaviour=behaviour,
            partial_bytes=len(body) // 2,
            content_length=len(body) + 1000 if behaviour == "short" else None,
        ),
    )
    good = media.serve("fine", jpeg(seed=8))
    media.creators([(1, bad), (2, good)])

    first = migrate(call)

    assert first["results"]["totals"]["migrated"] == 1
    assert first["results"]["totals"]["failed"] == 1
    assert media.pic(1) == bad
    assert media.pic(2).startswith(PUBLIC_URL)
    _rows_point_only_at_existing_objects(media)

    media.cdn.add(
        "/" + bad.split("://", 1)[1].split("/", 1)[1].split("?", 1)[0],
        Route(body, 200, {"Content-Type": "image/jpeg"}),
    )
    time.sleep(1.2)
    second: dict[str, Any] = migrate(call)
    assert second["results"]["totals"]["migrated"] == 1
    assert media.pic(1).startswith(PUBLIC_URL)
    _rows_point_only_at_existing_objects(media)
