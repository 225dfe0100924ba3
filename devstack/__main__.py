"""`python -m devstack run|serve`: the local stack for `make run` and `make serve`."""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from devstack.demo import seed_log_folder, seed_log_table
from devstack.emulator import Emulator
from devstack.stack import LocalStack

TARGETS = ("health", "cleanup_logs", "migrate_cdn_to_r2")


def _scheduler_headers(secret: str, job: str) -> dict[str, str]:
    # What Cloud Scheduler sends: its identity headers and the bearer secret.
    # Each `make run` is a new scheduled run, so its schedule time must differ
    # from the last one's; a whole minute, as Cloud Scheduler sends, would make
    # a second run within that minute a recognised retry, answered `skipped`.
    schedule_time = datetime.now(UTC).replace(microsecond=0)
    return {
        "Authorization": f"Bearer {secret}",
        "Content-Type": "application/json",
        "User-Agent": "Google-Cloud-Scheduler",
        "X-CloudScheduler": "true",
        "X-CloudScheduler-JobName": f"local-{job}",
        "X-CloudScheduler-ScheduleTime": schedule_time.isoformat().replace(
            "+00:00", "Z"
        ),
    }


def _print_runs(stack: LocalStack, limit: int = 5) -> None:
    from housekeeper.cli import format_runs
    from housekeeper.db.postgres import PostgresDatabase

    with PostgresDatabase(stack.postgres.url) as db:
        print(format_runs(db.list_runs(None, limit)))


def _supabase_standin(stack: LocalStack) -> tuple[Any, dict[str, str]]:
    # PostgREST cannot run here: the test suite's stand-in plays its RPC
    # endpoint over the embedded Postgres, so the function really goes through
    # supabase-py, HTTP and the service_role grants, but not through PostgREST.
    from tests.postgrest_standin import PostgrestStandIn

    standin = PostgrestStandIn(stack.postgres.url, secrets.token_urlsafe(32)).start()
    env = {key: value for key, value in stack.env().items() if key != "DATABASE_URL"}
    env["SUPABASE_URL"] = standin.url
    env["SUPABASE_SERVICE_ROLE_KEY"] = standin.key("service_role")
    print(
        f"Supabase transport: SUPABASE_URL={standin.url} is a local PostgREST "
        "STAND-IN (a test fixture, not PostgREST; see README, 'Supabase transport "
        "and migrations')",
        flush=True,
    )
    return standin, env


def run(args: argparse.Namespace) -> int:
    """Seed the demo, trigger cleanup-logs like Cloud Scheduler, print the answer."""
    stack = LocalStack()
    print("starting the embedded Postgres and applying the migrations ...", flush=True)
    stack.start()
    standin = None
    try:
        print("seeding the demo: 100,000 log rows over 90 days and a log folder ...")
        seed_log_table(stack.postgres.url)
        seed_log_folder(stack.log_dir, stack.outside_dir)
        env = stack.env()
        if args.transport == "supabase":
            standin, env = _supabase_standin(stack)
        log_path = stack.root / "emulator.log"
        with Emulator("cleanup_logs", env, log_path=log_path) as emulator:
            print(f"POST {emulator.url} as Cloud Scheduler would ...\n", flush=True)
            response = requests.post(
                emulator.url,
                headers=_scheduler_headers(stack.cron_secret(), "cleanup-logs"),
                data=json.dumps({"retention_days": 30}),
                timeout=600,
            )
        body: Any = response.json()
        print(f"HTTP {response.status_code}")
        print(json.dumps(body, indent=2))
        database = (body.get("results") or {}).get("database") or {}
        if database.get("deleted") and body.get("duration_ms"):
            rate = database["deleted"] / (body["duration_ms"] / 1000)
            batches = database["batches"]
            print(f"\npurge throughput: {rate:,.0f} rows/s over {batches} batches")
        print("\nrun ledger (python -m housekeeper runs):")
        _print_runs(stack)
        return 0 if response.status_code == 200 else 1
    finally:
        if standin is not None:
            standin.stop()
        stack.stop()


def run_media(args: argparse.Namespace) -> int:
    """Seed media rows, serve them from a local CDN, migrate them into local S3."""
    from devstack import media_demo as demo
    from devstack.media_servers import CdnServer, MotoS3
    from housekeeper.media.storage import R2Storage

    stack = LocalStack()
    folder = stack.root / "media-demo"
    state_path = folder / "state.json"
    print("starting the embedded Postgres and applying the migrations ...", flush=True)
    stack.start()
    cdn: CdnServer | None = None
    s3: MotoS3 | None = None
    try:
        state = {}
        if state_path.exists() and not args.reseed:
            state = json.loads(state_path.read_text())
        try:
            cdn = CdnServer(port=int(state.get("cdn_port", 0))).start()
        except OSError:
            state = {}
            cdn = CdnServer().start()
        print("generating the media corpus (cached in .local/media-demo/corpus) ...")
        paths = demo.serve_corpus(cdn, demo.build_corpus(folder / "corpus"))
        port = urlsplit(cdn.base_url).port
        if state.get("cdn_port") != port:
            demo.create_media_tables(stack.postgres.url, reset=True)
            for note in demo.seed_media_rows(stack.postgres.url, cdn, paths):
                print(f"seeded {note}")
            state_path.write_text(json.dumps({"cdn_port": port}))
        else:
            print(
                "the demo rows were seeded by an earlier run: this run only finds "
                "what is left (`make run-media RESEED=1` starts over)"
            )
        print(f"CDN stand-in: {cdn.base_url}")

        # moto's server logs every request through werkzeug; the answer is
        # what this demo is about.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        s3 = MotoS3().start()
        env = {**stack.env(), **demo.media_env(s3.endpoint_url)}
        bucket = R2Storage(
            endpoint_url=s3.endpoint_url,
            access_key_id=MotoS3.access_key_id,
            secret_access_key=MotoS3.secret_access_key,
            bucket=demo.DEMO_BUCKET,
        )
        bucket.client.create_bucket(
            Bucket=demo.DEMO_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": "auto"},
        )
        print(f"R2 stand-in (moto S3): {s3.endpoint_url}, bucket {demo.DEMO_BUCKET}")

        log_path = stack.root / "emulator-media.log"
        with Emulator("migrate_cdn_to_r2", env, log_path=log_path) as emulator:
            print(f"POST {emulator.url} as Cloud Scheduler would ...\n", flush=True)
            response = requests.post(
                emulator.url,
                headers=_scheduler_headers(stack.cron_secret(), "migrate-cdn-to-r2"),
                data=b"{}",
                timeout=900,
            )
        body: Any = response.json()
        print(f"HTTP {response.status_code}")
        print(json.dumps(body, indent=2))
        results = body.get("results") or {}
        rates = demo.throughput(results)
        if rates:
            print(
                "\nthroughput: " + ", ".join(f"{v} {k}/min" for k, v in rates.items())
            )
        print("\noutput sizes of everything migrated so far (housekeeper.media_items):")
        print(json.dumps(demo.size_distribution(stack.postgres.url), indent=2))
        print("\nrun ledger (python -m housekeeper runs):")
        _print_runs(stack)
        return 0 if response.status_code == 200 else 1
    finally:
        if s3 is not None:
            s3.stop()
        if cdn is not None:
            cdn.stop()
        stack.stop()


def serve(_: argparse.Namespace) -> int:
    """Keep the stack running, every target on its own port, until Ctrl-C."""
    from devstack import media_demo as demo
    from devstack.media_servers import MotoS3
    from housekeeper.media.storage import R2Storage

    stack = LocalStack()
    stack.start()
    emulators: list[Emulator] = []
    s3: MotoS3 | None = None
    try:
        if not stack.log_dir.exists():
            seed_log_table(stack.postgres.url)
            seed_log_folder(stack.log_dir, stack.outside_dir)
        demo.create_media_tables(stack.postgres.url)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        s3 = MotoS3().start()
        R2Storage(
            endpoint_url=s3.endpoint_url,
            access_key_id=MotoS3.access_key_id,
            secret_access_key=MotoS3.secret_access_key,
            bucket=demo.DEMO_BUCKET,
        ).client.create_bucket(
            Bucket=demo.DEMO_BUCKET,
            CreateBucketConfiguration={"LocationConstraint": "auto"},
        )
        env = {**stack.env(), **demo.media_env(s3.endpoint_url)}
        for target in TARGETS:
            log_path = stack.root / f"emulator-{target}.log"
            emulators.append(Emulator(target, env, log_path=log_path).start())
        print(f"DATABASE_URL={stack.postgres.url}")
        print(f"R2 stand-in (moto S3): {s3.endpoint_url}, bucket {demo.DEMO_BUCKET}")
        for emulator in emulators:
            print(f"{emulator.target:<18} {emulator.url}")
        job = next(e for e in emulators if e.target == "cleanup_logs")
        print(
            "\ntry:\n  curl -s -X POST "
            f"-H 'Authorization: Bearer {stack.cron_secret()}' "
            f"'{job.url}?dry_run=true'\n\nCtrl-C stops everything.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while all(e.process and e.process.poll() is None for e in emulators):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for emulator in emulators:
            emulator.stop()
        if s3 is not None:
            s3.stop()
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help=run.__doc__)
    run_parser.add_argument(
        "--transport",
        choices=("postgres", "supabase"),
        default="postgres",
        help="supabase: reach the database through the local PostgREST stand-in",
    )
    run_parser.set_defaults(func=run)
    commands.add_parser("serve", help=serve.__doc__).set_defaults(func=serve)
    media = commands.add_parser("run-media", help=run_media.__doc__)
    media.add_argument(
        "--reseed", action="store_true", help="seed the media rows afresh"
    )
    media.set_defaults(func=run_media)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
