"""The media demo: app tables with CDN URLs, a local CDN and moto's S3 as R2.

`make run-media` seeds `instagram_creators`, `instagram_posts` and
`instagram_reels` once (a second run finds them migrated), serves a generated
corpus from a `CdnServer` on 127.0.0.1 that stands in for the Instagram CDN,
and stores into moto's S3 server on 127.0.0.1 that stands in for R2. The CDN
URLs carry the query string of real signed URLs (`oe=` expiry, `oh=`
signature); `MEDIA_CDN_HOSTS=127.0.0.1` makes them eligible.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devstack.media_servers import CdnServer, Route

MEDIA_TABLES_SQL = """
create table if not exists public.instagram_creators (
  id bigint primary key,
  username text not null,
  profile_pic_url text
);
create table if not exists public.instagram_posts (
  id bigint primary key,
  creator_id bigint not null,
  image_urls text[]
);
create table if not exists public.instagram_reels (
  id bigint primary key,
  creator_id bigint not null,
  video_url text
);
"""

EXPIRED_BODY = b"URL signature expired"
# Far in the future (2038) unless a case needs an expired one.
VALID_OE = "7FFFFFFF"
EXPIRED_OE = "6A2F427E"


def create_media_tables(url: str, *, reset: bool = False) -> None:
    """Create the three application tables the default media sources name."""
    with psycopg.connect(url, autocommit=True) as connection:
        if reset:
            connection.execute(
                "drop table if exists public.instagram_creators,"
                " public.instagram_posts, public.instagram_reels"
            )
        connection.execute(MEDIA_TABLES_SQL.encode())


def cdn_path(kind: str, name: str, ext: str) -> str:
    """A path shaped like the CDN's (`/v/t51.2885-15/<name>_n.jpg`)."""
    folder = {"profile": "t51.2885-19", "post": "t51.2885-15", "reel": "t50.2886-16"}
    return f"/v/{folder[kind]}/{name}_n.{ext}"


def signed_query(path: str, *, oe: str = VALID_OE) -> str:
    """A query string like a signed CDN URL's: `oh=` signature, `oe=` expiry."""
    signature = hashlib.sha256(f"demo-signature:{path}:{oe}".encode()).hexdigest()
    return (
        "stp=dst-jpg_e35&_nc_ht=scontent-ams2-1.cdninstagram.com&_nc_cat=1"
        f"&_nc_ohc=AbCdEf&oh=00_{signature[:40]}&oe={oe}"
    )


@dataclass
class Corpus:
    """Generated media by name, and which names are traps."""

    images: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    videos: dict[str, tuple[bytes, str]] = field(default_factory=dict)


def build_corpus(cache: Path) -> Corpus:
    """Images in many modes and sizes and a few short videos, cached on disk.

    The generators are deterministic, so the cache only saves time; delete
    the folder to regenerate.
    """
    from devstack import media_fixtures as mf

    cache.mkdir(parents=True, exist_ok=True)
    corpus = Corpus()

    def cached(name: str, make: Any) -> bytes:
        path = cache / name
        if not path.exists():
            path.write_bytes(make())
        return path.read_bytes()

    sizes = [(150, 150), (320, 320), (640, 800), (1080, 1080), (1080, 1350)]
    sizes += [(1440, 1800), (2048, 2048), (3024, 4032)]
    for index, (width, height) in enumerate(sizes):
        for noise in (0.0, 0.08, 0.2):
            name = f"photo-{width}x{height}-n{int(noise * 100)}.jpg"
            corpus.images[name] = (
                cached(
                    name,
                    lambda w=width, h=height, n=noise, s=index: mf.photo_jpeg(
                        w, h, noise=n, seed=s
                    ),
                ),
                "image/jpeg",
            )
    extras = {
        "rgba-corner.png": (lambda: mf.rgba_png(64, 16), "image/png"),
        "la.png": (mf.la_png, "image/png"),
        "palette.png": (mf.palette_png, "image/png"),
        "cmyk.jpg": (mf.cmyk_jpeg, "image/jpeg"),
        "sixteen-bit.png": (mf.sixteen_bit_png, "image/png"),
        "bilevel.png": (mf.bilevel_png, "image/png"),
        "exif-rotated.jpg": (mf.exif_rotated_jpeg, "image/jpeg"),
        "photo.webp": (
            lambda: mf.encode(mf.photo(1200, 1200, seed=7), "WEBP", quality=90),
            "image/webp",
        ),
        "photo-big.png": (
            lambda: mf.encode(mf.photo(1600, 1200, seed=8), "PNG"),
            "image/png",
        ),
        "bomb.png": (lambda: mf.png_claiming(20000, 20000), "image/png"),
    }
    for name, (make, content_type) in extras.items():
        corpus.images[name] = (cached(name, make), content_type)

    clips = [
        ("reel-1080x1920-3s.mp4", 1080, 1920, 3.0, False),
        ("reel-720x1280-audio-4s.mp4", 720, 1280, 4.0, True),
        ("reel-640x640-2s.mp4", 640, 640, 2.0, False),
        ("reel-1920x1080-audio-5s.mp4", 1920, 1080, 5.0, True),
    ]
    for name, width, height, duration_s, audio in clips:
        path = cache / name
        if not path.exists():
            mf.make_video(
                path, width=width, height=height, duration_s=duration_s, audio=audio
            )
        corpus.videos[name] = (path.read_bytes(), "video/mp4")
    return corpus


def serve_corpus(cdn: CdnServer, corpus: Corpus) -> dict[str, str]:
    """Register every corpus file and the traps on the CDN; returns name -> path."""
    paths: dict[str, str] = {}
    for name, (body, content_type) in corpus.images.items():
        stem = name.rsplit(".", 1)[0]
        ext = name.rsplit(".", 1)[1]
        path = cdn_path("post", stem, ext)
        cdn.add(path, Route(body, 200, {"Content-Type": content_type}))
        paths[name] = path
    for name, (body, content_type) in corpus.videos.items():
        path = cdn_path("reel", name.rsplit(".", 1)[0], "mp4")
        cdn.add(path, Route(body, 200, {"Content-Type": content_type}))
        paths[name] = path
    expired = cdn_path("profile", "expired-signature", "jpg")
    cdn.add(
        expired,
        Route(EXPIRED_BODY, 403, {"Content-Type": "text/plain"}),
    )
    paths["trap:expired-403"] = expired
    paths["trap:404"] = cdn_path("post", "deleted-by-owner", "jpg")
    return paths


def seed_media_rows(url: str, cdn: CdnServer, paths: dict[str, str]) -> list[str]:
    """Fill the three tables with CDN URLs (and a few that are not); returns notes."""
    rng = random.Random(20261204)
    images = sorted(
        name for name in paths if not name.startswith("trap:") and "reel-" not in name
    )
    good = [name for name in images if name != "bomb.png"]
    videos = sorted(name for name in paths if name.startswith("reel-"))

    def link(name: str, *, oe: str = VALID_OE) -> str:
        path = paths[name]
        return cdn.url(path, signed_query(path, oe=oe))

    creators: list[tuple[int, str, str | None]] = []
    for index in range(1, 41):
        creators.append((index, f"creator{index}", link(good[index % len(good)])))
    creators += [
        (41, "expired_oe", link("photo-320x320-n8.jpg", oe=EXPIRED_OE)),
        (42, "expired_403", link("trap:expired-403")),
        (43, "no_picture", None),
        (44, "elsewhere", "https://images.example.org/avatar.jpg"),
    ]

    posts: list[tuple[int, int, list[str]]] = []
    for index in range(1, 31):
        count = 1 + rng.randrange(4)
        posts.append(
            (index, 1 + index % 40, [link(rng.choice(good)) for _ in range(count)])
        )
    posts += [
        (31, 1, [link("rgba-corner.png"), link("bomb.png"), link("trap:404")]),
        (32, 2, [link("exif-rotated.jpg"), link("cmyk.jpg")]),
    ]

    reels = [
        (index, 1 + index, link(name)) for index, name in enumerate(videos, start=1)
    ]

    with (
        psycopg.connect(url, autocommit=True) as connection,
        connection.transaction(),
    ):
        connection.execute(
            "truncate public.instagram_creators, public.instagram_posts,"
            " public.instagram_reels"
        )
        connection.execute("delete from housekeeper.media_items")
        with connection.cursor() as cursor:
            cursor.executemany(
                "insert into public.instagram_creators values (%s, %s, %s)",
                creators,
            )
            cursor.executemany(
                "insert into public.instagram_posts values (%s, %s, %s)", posts
            )
            cursor.executemany(
                "insert into public.instagram_reels values (%s, %s, %s)", reels
            )
    images_total = sum(1 for row in creators if row[2] and "127.0.0.1" in row[2])
    images_total += sum(len(row[2]) for row in posts)
    return [
        f"{len(creators)} creators, {len(posts)} posts ({images_total} image URLs "
        f"in all), {len(reels)} reels",
        "traps: an oe= in the past, a 403 'URL signature expired', a 404, "
        "a PNG claiming 20000x20000 pixels",
    ]


def size_distribution(url: str) -> dict[str, Any]:
    """Output sizes of everything migrated so far, per source, from the state."""
    query = """
      select source, count(*), sum(bytes_in), sum(bytes_out),
             min(bytes_out), percentile_disc(0.5) within group (order by bytes_out),
             percentile_disc(0.9) within group (order by bytes_out), max(bytes_out)
        from housekeeper.media_items where status = 'migrated'
       group by source order by source
    """
    buckets_query = """
      select source, width_bucket(bytes_out, array[51200, 102400, 204800, 307200,
                                                   524288, 1048576, 1572864]), count(*)
        from housekeeper.media_items where status = 'migrated'
       group by 1, 2 order by 1, 2
    """
    labels = [
        "<50 KB",
        "50-100 KB",
        "100-200 KB",
        "200-300 KB",
        "300-512 KB",
        "0.5-1 MB",
        "1-1.5 MB",
        ">1.5 MB",
    ]
    result: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as connection:
        for row in connection.execute(query):
            source, count, bytes_in, bytes_out, low, median, p90, high = row
            result[source] = {
                "count": count,
                "bytes_in": int(bytes_in or 0),
                "bytes_out": int(bytes_out or 0),
                "min_kb": round(low / 1024, 1),
                "median_kb": round(median / 1024, 1),
                "p90_kb": round(p90 / 1024, 1),
                "max_kb": round(high / 1024, 1),
                "histogram": {},
            }
        for source, bucket, count in connection.execute(buckets_query):
            result[source]["histogram"][labels[bucket]] = count
    return result


def item_states(url: str) -> Iterable[tuple[str, str, int, str, str | None]]:
    """Every item's source, row, position, status and last error."""
    with psycopg.connect(url, autocommit=True) as connection:
        return connection.execute(
            "select source, row_id, position, status, last_error"
            " from housekeeper.media_items order by source, row_id::bigint, position"
        ).fetchall()


DEMO_BUCKET = "housekeeper-demo"
# Never fetched by the job (it HEADs objects through the S3 endpoint); only the
# prefix that tells migrated URLs apart. `.test` is reserved and never resolves.
DEMO_PUBLIC_URL = "https://media.example.test/housekeeper-demo"
THROUGHPUT_KINDS = {"image": "images", "image_array": "images", "video": "videos"}


def media_env(endpoint_url: str) -> dict[str, str]:
    """The settings the demo's function runs with, on top of the stack's."""
    from devstack.media_servers import MotoS3

    return {
        "R2_ENDPOINT_URL": endpoint_url,
        "R2_ACCESS_KEY_ID": MotoS3.access_key_id,
        "R2_SECRET_ACCESS_KEY": MotoS3.secret_access_key,
        "R2_BUCKET": DEMO_BUCKET,
        "R2_PUBLIC_URL": DEMO_PUBLIC_URL,
        # The local CDN stand-in listens on loopback; nothing else is eligible.
        "MEDIA_CDN_HOSTS": "127.0.0.1",
    }


def throughput(results: dict[str, Any]) -> dict[str, float]:
    """Migrated images and videos per minute, from the per-source durations."""
    done: dict[str, int] = {}
    spent_ms: dict[str, int] = {}
    for entry in (results.get("sources") or {}).values():
        kind = THROUGHPUT_KINDS.get(entry.get("kind", ""), "other")
        done[kind] = done.get(kind, 0) + int(entry.get("migrated", 0))
        spent_ms[kind] = spent_ms.get(kind, 0) + int(entry.get("duration_ms", 0))
    return {
        kind: round(done[kind] / (spent_ms[kind] / 60000), 1)
        for kind in done
        if done[kind] and spent_ms[kind]
    }
