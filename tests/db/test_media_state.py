"""The media item state in SQL: eligibility, claims, backoff and compare-and-set."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from housekeeper.config import MediaSource
from housekeeper.db.base import MediaItem
from housekeeper.db.postgres import PostgresDatabase
from housekeeper.errors import ConfigurationError, DatabaseError

HOSTS = ("cdninstagram.com", "fbcdn.net")
PUBLIC = "https://media.example.test/"
CREATORS = MediaSource(
    "creators", "sql_creators", "id", "pic", "image", "profiles", "profile"
)
POSTS = MediaSource("posts", "sql_posts", "id", "urls", "image_array", "posts", "posts")
BASE_S = 900


def cdn(name: str, oe: str = "7FFFFFFF") -> str:
    return (
        f"https://scontent-ams2-1.cdninstagram.com/v/t51/{name}.jpg?oe={oe}&oh=00_sig"
    )


@pytest.fixture
def tables(conn: psycopg.Connection) -> psycopg.Connection:
    conn.execute("drop table if exists sql_creators, sql_posts, sql_text_ids")
    conn.execute("create table sql_creators (id bigint primary key, pic text)")
    conn.execute("create table sql_posts (id bigint primary key, urls text[])")
    conn.execute("truncate housekeeper.media_items")
    return conn


@pytest.fixture
def db(database):
    """Each test runs over both transports: the same SQL, the same answers."""
    return database


def claim(db, source=CREATORS, run_id=None, limit=100, lease_s=600):
    return db.media_claim(
        source,
        hosts=HOSTS,
        exclude_prefix=PUBLIC,
        run_id=run_id or str(uuid.uuid4()),
        limit=limit,
        lease_s=lease_s,
    )


def record(db, item: MediaItem, run_id: str, status: str, **extra):
    return db.media_record(
        item,
        run_id=run_id,
        status=status,
        error=extra.get("error"),
        r2_key=extra.get("r2_key"),
        bytes_in=extra.get("bytes_in"),
        bytes_out=extra.get("bytes_out"),
        retry_base_s=extra.get("base_s", BASE_S),
        retry_max_s=extra.get("max_s", 7 * 86400),
    )


def state(conn, source="creators", row_id="1", position=0):
    return conn.execute(
        "select status, attempts, last_error, next_attempt_at - now(), claimed_until,"
        " r2_key, bytes_in, bytes_out from housekeeper.media_items"
        " where source = %s and row_id = %s and position = %s",
        (source, row_id, position),
    ).fetchone()


def test_only_urls_on_cdn_hosts_and_their_subdomains_are_claimed(tables, db):
    urls = {
        1: "https://scontent.cdninstagram.com/a.jpg?oe=7FFFFFFF",
        2: "https://fbcdn.net/b.jpg",
        3: "HTTPS://Video.XX.FBCDN.NET./c.mp4",
        4: "https://cdninstagram.com.evil.example/d.jpg",
        5: "https://evilcdninstagram.com/e.jpg",
        6: "https://cdninstagram.com@evil.example/f.jpg",
        7: "https://evil.example/?next=https://fbcdn.net/g.jpg",
        8: "ftp://fbcdn.net/h.jpg",
        9: PUBLIC + "profiles/9/0-abc.jpg",
        10: None,
        11: "not a url",
        12: "https://user:pw@scontent.cdninstagram.com:443/l.jpg",
    }
    with tables.cursor() as cursor:
        cursor.executemany(
            "insert into sql_creators values (%s, %s)", list(urls.items())
        )

    items = claim(db)

    assert [item.row_id for item in items] == ["1", "2", "3", "12"]
    assert items[0].url == urls[1]
    assert items[0].position == 0
    assert items[0].attempts == 0
    assert items[0].status == "pending"


def test_the_r2_public_prefix_is_excluded_even_on_a_cdn_host(tables, db):
    tables.execute(
        "insert into sql_creators values (1, 'https://media.fbcdn.net/bucket/k.jpg'),"
        " (2, 'https://media.fbcdn.net/other/k.jpg')"
    )
    items = db.media_claim(
        CREATORS,
        hosts=HOSTS,
        exclude_prefix="https://media.fbcdn.net/bucket/",
        run_id=str(uuid.uuid4()),
        limit=10,
        lease_s=60,
    )
    assert [item.row_id for item in items] == ["2"]


def test_array_elements_are_items_of_their_own_in_id_and_position_order(tables, db):
    tables.execute(
        "insert into sql_posts values"
        " (20, array[%s, 'https://other.example/x.jpg', %s]),"
        " (3, array[%s]), (7, null), (8, '{}'), (9, array[null, %s])",
        (cdn("a"), cdn("b"), cdn("c"), cdn("d")),
    )
    items = claim(db, POSTS)
    assert [(item.row_id, item.position) for item in items] == [
        ("3", 0),
        ("9", 1),
        ("20", 0),
        ("20", 2),
    ]
    assert items[3].url == cdn("b")


def test_claims_respect_the_limit_and_a_run_never_gets_an_item_twice(tables, db):
    with tables.cursor() as cursor:
        cursor.executemany(
            "insert into sql_creators values (%s, %s)",
            [(i, cdn(str(i))) for i in range(1, 8)],
        )
    run_id = str(uuid.uuid4())
    first = claim(db, run_id=run_id, limit=3)
    second = claim(db, run_id=run_id, limit=3)
    third = claim(db, run_id=run_id, limit=3)
    fourth = claim(db, run_id=run_id, limit=3)
    assert [i.row_id for i in first] == ["1", "2", "3"]
    assert [i.row_id for i in second] == ["4", "5", "6"]
    assert [i.row_id for i in third] == ["7"]
    assert fourth == []
    # Released, but still this run's: it does not pick them up again.
    assert db.media_release(run_id) == 7
    assert claim(db, run_id=run_id) == []


def test_a_live_claim_of_another_run_is_skipped_and_a_lapsed_one_taken_over(tables, db):
    tables.execute(
        "insert into sql_creators values (1, %s), (2, %s)", (cdn("1"), cdn("2"))
    )
    held = claim(db, limit=1, lease_s=600)
    assert [i.row_id for i in held] == ["1"]
    assert [i.row_id for i in claim(db)] == ["2"]

    tables.execute(
        "update housekeeper.media_items set claimed_until = now() - interval '1 s'"
        " where row_id = '1'"
    )
    assert [i.row_id for i in claim(db)] == ["1"]


def test_two_overlapping_runs_never_claim_the_same_item(tables, pg):
    with tables.cursor() as cursor:
        cursor.executemany(
            "insert into sql_creators values (%s, %s)",
            [(i, cdn(str(i))) for i in range(1, 301)],
        )
    barrier = threading.Barrier(2)
    claimed: dict[str, list[tuple[str, int]]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        database = PostgresDatabase(pg.url)
        run_id = str(uuid.uuid4())
        mine: list[tuple[str, int]] = []
        try:
            barrier.wait()
            while True:
                items = claim(database, run_id=run_id, limit=7)
                if not items:
                    break
                mine += [(item.row_id, item.position) for item in items]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            database.close()
            claimed[name] = mine

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    a, b = set(claimed["a"]), set(claimed["b"])
    assert len(a) == len(claimed["a"])
    assert len(b) == len(claimed["b"])
    assert a.isdisjoint(b)
    assert len(a | b) == 300
    assert a
    assert b


def test_failed_items_back_off_exponentially_and_are_capped(tables, db, conn):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("1"),))
    waits = []
    for _ in range(4):
        run_id = str(uuid.uuid4())
        (item,) = claim(db, run_id=run_id)
        result = record(db, item, run_id, "failed", error="HTTP 404", max_s=5000)
        assert result["updated"] is True
        row = state(conn)
        waits.append(round(row[3].total_seconds()))
        # Not eligible while it waits; eligible once the wait is over.
        assert claim(db) == []
        conn.execute(
            "update housekeeper.media_items set next_attempt_at = now()"
            " where row_id = '1'"
        )
    assert waits == [900, 1800, 3600, 5000]
    row = state(conn)
    assert row[0] == "failed"
    assert row[1] == 4
    assert row[2] == "HTTP 404"
    assert row[4] is None


@pytest.mark.parametrize("status", ["migrated", "expired", "skipped"])
def test_settled_items_are_not_claimed_again_while_the_url_is_the_same(
    tables, db, conn, status
):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("1"),))
    run_id = str(uuid.uuid4())
    (item,) = claim(db, run_id=run_id)
    record(db, item, run_id, status, r2_key="k", bytes_in=10, bytes_out=5)
    assert state(conn)[3] is None
    assert claim(db) == []
    counts = db.media_count(CREATORS, hosts=HOSTS, exclude_prefix=PUBLIC)
    assert counts["eligible"] == 0


def test_a_new_url_resets_the_items_state(tables, db, conn):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("old", "6A2F427E"),))
    run_id = str(uuid.uuid4())
    (item,) = claim(db, run_id=run_id)
    record(db, item, run_id, "expired", error="signed URL expired")
    assert claim(db) == []

    tables.execute("update sql_creators set pic = %s where id = 1", (cdn("new"),))
    (again,) = claim(db)
    assert again.url == cdn("new")
    assert again.attempts == 0
    assert again.status == "pending"
    assert again.url_hash != item.url_hash
    row = state(conn)
    assert row[:3] == ("pending", 0, None)


def test_only_the_claiming_run_can_record_for_the_url_it_claimed(tables, db, conn):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("1"),))
    run_id = str(uuid.uuid4())
    (item,) = claim(db, run_id=run_id)
    assert record(db, item, str(uuid.uuid4()), "migrated")["updated"] is False
    stale = MediaItem(**{**item.__dict__, "url_hash": "0" * 64})
    assert record(db, stale, run_id, "migrated")["updated"] is False
    assert record(db, item, run_id, "migrated", r2_key="a/b.jpg")["updated"] is True
    assert state(conn)[0] == "migrated"
    assert state(conn)[5] == "a/b.jpg"


def test_count_reports_what_a_run_would_find(tables, db, conn):
    with tables.cursor() as cursor:
        cursor.executemany(
            "insert into sql_creators values (%s, %s)",
            [(i, cdn(str(i))) for i in range(1, 7)],
        )
    run_id = str(uuid.uuid4())
    items = claim(db, run_id=run_id, limit=3)
    record(db, items[0], run_id, "failed", error="x")
    record(db, items[1], run_id, "expired", error="x")
    # items[2] stays claimed by the live run.
    counts = db.media_count(CREATORS, hosts=HOSTS, exclude_prefix=PUBLIC)
    assert counts == {
        "on_cdn": 6,
        "eligible": 3,
        "backing_off": 1,
        "expired": 1,
        "in_progress": 1,
        "done": 0,
    }


def test_swap_replaces_a_scalar_only_if_the_row_still_holds_the_old_url(
    tables, db, conn
):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("1"),))
    (item,) = claim(db)
    tables.execute("update sql_creators set pic = %s where id = 1", (cdn("changed"),))
    assert db.media_swap(CREATORS, item, PUBLIC + "x.jpg") is False
    assert tables.execute("select pic from sql_creators").fetchone()[0] == cdn(
        "changed"
    )

    tables.execute("update sql_creators set pic = %s where id = 1", (cdn("1"),))
    assert db.media_swap(CREATORS, item, PUBLIC + "x.jpg") is True
    assert tables.execute("select pic from sql_creators").fetchone()[0] == (
        PUBLIC + "x.jpg"
    )


def test_swap_replaces_one_array_element_by_position(tables, db):
    tables.execute(
        "insert into sql_posts values (1, array[%s, %s, %s])",
        (cdn("a"), cdn("b"), cdn("c")),
    )
    items = claim(db, POSTS)
    assert db.media_swap(POSTS, items[1], PUBLIC + "b.jpg") is True
    # An element moved by the application is not overwritten.
    tables.execute(
        "update sql_posts set urls = array[%s, %s, %s]", (cdn("c"), cdn("a"), cdn("x"))
    )
    assert db.media_swap(POSTS, items[0], PUBLIC + "a.jpg") is False
    assert db.media_swap(POSTS, items[2], PUBLIC + "c.jpg") is False
    assert tables.execute("select urls from sql_posts").fetchone()[0] == [
        cdn("c"),
        cdn("a"),
        cdn("x"),
    ]


def test_swap_addresses_text_ids_and_non_default_array_bounds(tables, db, conn):
    conn.execute("create table sql_text_ids (id text primary key, urls text[])")
    conn.execute(
        "insert into sql_text_ids values ('abc', %s::text[])",
        (f"[0:1]={{{cdn('a')},{cdn('b')}}}",),
    )
    source = MediaSource(
        "t", "public.sql_text_ids", "id", "urls", "image_array", "t", "t"
    )
    items = claim(db, source)
    assert [(i.row_id, i.position) for i in items] == [("abc", 0), ("abc", 1)]
    assert db.media_swap(source, items[1], PUBLIC + "b.jpg") is True
    assert conn.execute("select urls[1] from sql_text_ids").fetchone()[0] == (
        PUBLIC + "b.jpg"
    )


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        (
            MediaSource("x", "no_such_table", "id", "pic", "image", "x", "x"),
            ConfigurationError,
            "table public.no_such_table does not exist",
        ),
        (
            MediaSource("x", "sql_creators", "id", "nope", "image", "x", "x"),
            ConfigurationError,
            "column nope does not exist in public.sql_creators",
        ),
        (
            MediaSource("x", "sql_creators", "pic", "pic", "image", "x", "x"),
            ConfigurationError,
            "column pic of public.sql_creators is not a primary or unique key",
        ),
        (
            MediaSource("x", "sql_creators", "id", "pic", "image_array", "x", "x"),
            ConfigurationError,
            "column pic of public.sql_creators is text; kind image_array needs text[]",
        ),
        (
            MediaSource("x", "sql_posts", "id", "urls", "video", "x", "x"),
            ConfigurationError,
            "column urls of public.sql_posts is text[]; kind video needs text",
        ),
    ],
)
def test_a_misdeclared_source_is_refused_with_its_reason(
    tables, db, source, error, message
):
    with pytest.raises(error) as caught:
        claim(db, source)
    assert caught.value.message == message


def test_record_refuses_an_unknown_status(tables, db):
    tables.execute("insert into sql_creators values (1, %s)", (cdn("1"),))
    run_id = str(uuid.uuid4())
    (item,) = claim(db, run_id=run_id)
    with pytest.raises(DatabaseError, match="invalid media item status 'done'"):
        record(db, item, run_id, "done")
