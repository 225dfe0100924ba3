"""migrate-cdn-to-r2: move media off expiring CDN URLs into R2, item by item.

Each declared source (a table's URL column, or each element of a `text[]`
column) is worked through in claimed batches, ordered by row id and position.
An item is downloaded, fitted (images) or transcoded (videos), uploaded under
a content-addressed key, verified by HEAD, and only then swapped into its row
by a compare-and-set that applies only if the row still holds the URL that was
migrated. Every item's outcome is recorded with its attempts and a backoff, so
a failing item waits and never blocks the rest.

Pillow, boto3 and httpx are imported only when a run needs them: the module is
loaded for every request to this target, the health check never loads it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from housekeeper.config import MediaSource, Settings
from housekeeper.db.base import MediaItem
from housekeeper.errors import (
    ConfigurationError,
    DependencyError,
    HousekeeperError,
    InvalidParameterError,
    MediaError,
    MediaExpiredError,
)
from housekeeper.http import Params, parse_bool, parse_choice, parse_int
from housekeeper.runs import JobOutcome, RunContext, iso, utc_now

if TYPE_CHECKING:
    import httpx

    from housekeeper.media.storage import R2Storage

logger = logging.getLogger(__name__)

JOB = "migrate-cdn-to-r2"
MEDIA_TYPES = ("profile", "posts", "reels", "all")
REQUIRED_FUNCTIONS = [
    "housekeeper_media_claim",
    "housekeeper_media_count",
    "housekeeper_media_record",
    "housekeeper_media_swap",
    "housekeeper_media_release",
]
MAX_ERROR_SAMPLES = 10
# A failing item is retried after MEDIA_RETRY_BASE_S, doubling per attempt, but
# never waits longer than a week: a CDN outage must not park items for months.
RETRY_MAX_S = 7 * 86400
COUNTERS = ("total", "migrated", "skipped", "failed", "expired")


@dataclass(frozen=True)
class MediaParams:
    """The validated parameters of one migrate-cdn-to-r2 request."""

    media_type: str
    batch_size: int
    dry_run: bool
    sources: tuple[MediaSource, ...]


def missing_r2_settings(settings: Settings) -> list[str]:
    """The R2 settings a run needs that are not set."""
    needed = (
        ("R2_ACCOUNT_ID or R2_ENDPOINT_URL", settings.r2_endpoint),
        ("R2_ACCESS_KEY_ID", settings.r2_access_key_id),
        ("R2_SECRET_ACCESS_KEY", settings.r2_secret_access_key),
        ("R2_BUCKET", settings.r2_bucket),
        ("R2_PUBLIC_URL", settings.r2_public_url),
    )
    return [name for name, value in needed if not value]


def parse_params(params: Params, settings: Settings) -> MediaParams:
    """`media_type` (profile, posts, reels, all), `batch_size` (1..500), `dry_run`.

    R2 is checked here, before any query runs: a run without storage (or, for a
    dry run, without the public URL that tells migrated rows apart) is refused.
    """
    media_type = parse_choice(params, "media_type", "all", MEDIA_TYPES)
    batch_size = parse_int(params, "batch_size", 25, low=1, high=500)
    dry_run = parse_bool(params, "dry_run")

    sources = tuple(
        source
        for source in settings.media_sources
        if media_type == "all" or source.media_type == media_type
    )
    if not sources:
        raise InvalidParameterError(
            "media_type", f"no media source has media_type {media_type!r}"
        )
    missing = missing_r2_settings(settings)
    if missing:
        raise ConfigurationError(
            f"{JOB} needs R2 storage; not set: {', '.join(missing)}"
        )
    return MediaParams(media_type, batch_size, dry_run, sources)


def run(ctx: RunContext, params: MediaParams) -> JobOutcome:
    """Migrate every eligible item of the selected sources, or count them (dry)."""
    ctx.db.require_functions(REQUIRED_FUNCTIONS)
    if params.dry_run:
        return _dry_run(ctx, params)

    from housekeeper.media.storage import R2Storage

    storage = R2Storage.from_settings(ctx.settings)
    migrator = _Migrator(ctx, storage, params.batch_size)
    try:
        for source in params.sources:
            migrator.migrate(source)
    except DependencyError as exc:
        exc.partial = migrator.results(params)
        raise
    finally:
        migrator.close()

    results = migrator.results(params)
    totals = results["totals"]
    partial = any(r["status"] == "partial" for r in results["sources"].values())
    if totals["total"] == 0:
        message = "nothing to migrate"
    else:
        message = (
            f"migrated {totals['migrated']} of {totals['total']} items "
            f"({totals['failed']} failed, {totals['expired']} expired, "
            f"{totals['skipped']} skipped)"
        )
    if partial:
        message += "; time budget reached, the next run continues"
    return JobOutcome("partial" if partial else "success", message, results, totals)


def _dry_run(ctx: RunContext, params: MediaParams) -> JobOutcome:
    settings = ctx.settings
    sources: dict[str, Any] = {}
    for source in params.sources:
        counts = ctx.db.media_count(
            source,
            hosts=settings.media_cdn_hosts,
            exclude_prefix=_public_prefix(settings),
        )
        sources[source.name] = {**_describe(source), **counts}
    eligible = sum(entry.get("eligible", 0) for entry in sources.values())
    results = {
        "media_type": params.media_type,
        "batch_size": params.batch_size,
        "dry_run": True,
        "sources": sources,
        "totals": {"eligible": eligible},
    }
    message = f"dry run: {eligible} items would be migrated"
    return JobOutcome("dry_run", message, results, {"eligible": eligible})


def _public_prefix(settings: Settings) -> str | None:
    # With the slash, so that a bucket URL that merely starts the same way
    # (media.example.com vs media.example.com.evil) is not mistaken for it.
    return f"{settings.r2_public_url}/" if settings.r2_public_url else None


def _describe(source: MediaSource) -> dict[str, Any]:
    return {"table": source.table, "column": source.url_column, "kind": source.kind}


def _scrub(reason: str, url: str) -> str:
    """A reason safe to log and return: the item's query string never appears."""
    from housekeeper.media.download import redact_url

    reason = reason.replace(url, redact_url(url))
    query = urlsplit(url).query
    if query:
        reason = reason.replace(query, "[query]")
    return reason[:500]


@dataclass
class _ItemResult:
    """What a worker made of one item; the main thread records it."""

    item: MediaItem
    outcome: str  # uploaded, expired, failed or not_started
    reason: str | None = None
    key: str | None = None
    public_url: str | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    over_target: bool = False


@dataclass
class _SourceReport:
    """Counts of one source, as the response shows them."""

    source: MediaSource
    total: int = 0
    migrated: int = 0
    skipped: int = 0
    failed: int = 0
    expired: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    over_target: int = 0
    batches: int = 0
    duration_ms: int = 0
    status: str = "pending"

    def as_dict(self) -> dict[str, Any]:
        return {
            **_describe(self.source),
            "total": self.total,
            "migrated": self.migrated,
            "skipped": self.skipped,
            "failed": self.failed,
            "expired": self.expired,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "over_target": self.over_target,
            "batches": self.batches,
            "duration_ms": self.duration_ms,
            "status": self.status,
        }


class _Migrator:
    """One run's workers, clients and counts."""

    def __init__(self, ctx: RunContext, storage: R2Storage, batch_size: int) -> None:
        import httpx

        settings = ctx.settings
        self.ctx = ctx
        self.settings = settings
        self.storage = storage
        self.batch_size = batch_size
        self.reports: list[_SourceReport] = []
        self.samples: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        # Decoding and encoding hold a core each; more at once only thrashes.
        cores = os.cpu_count() or 1
        self.cpu = threading.BoundedSemaphore(cores)
        # ffmpeg would take every core per transcode; split them instead.
        self.ffmpeg_threads = max(1, cores // min(cores, settings.media_concurrency))
        self.pool = ThreadPoolExecutor(
            max_workers=settings.media_concurrency, thread_name_prefix="media"
        )
        self.http: httpx.Client = httpx.Client(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=settings.media_concurrency),
        )
        self.work_dir = tempfile.TemporaryDirectory(prefix="housekeeper-media-")
        self._ffmpeg_problem: str | None = None
        self._ffmpeg_checked = False

    def close(self) -> None:
        """Stop the workers, release the claims not reached, remove temp files."""
        self.stopping.set()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()
        self.work_dir.cleanup()
        try:
            released = self.ctx.db.media_release(self.ctx.run_id)
        except HousekeeperError as exc:
            # The claims lapse on their own after the lease; nothing is lost.
            logger.warning("could not release the run's media claims: %s", exc.message)
            return
        if released:
            logger.info("released %d claimed items not reached in this run", released)

    def results(self, params: MediaParams) -> dict[str, Any]:
        """The response's results: per source, totals and error samples."""
        totals = dict.fromkeys((*COUNTERS, "bytes_in", "bytes_out"), 0)
        for report in self.reports:
            for name in totals:
                totals[name] += getattr(report, name)
        return {
            "media_type": params.media_type,
            "batch_size": params.batch_size,
            "sources": {r.source.name: r.as_dict() for r in self.reports},
            "totals": totals,
            "error_samples": list(self.samples),
        }

    def migrate(self, source: MediaSource) -> None:
        """Claim and process batches of `source` until none is left or time is up."""
        report = _SourceReport(source)
        self.reports.append(report)
        started = utc_now()
        report.status = "running"
        try:
            while True:
                if self.ctx.out_of_time():
                    report.status = "partial"
                    break
                items = self.ctx.db.media_claim(
                    source,
                    hosts=self.settings.media_cdn_hosts,
                    exclude_prefix=_public_prefix(self.settings),
                    run_id=self.ctx.run_id,
                    limit=self.batch_size,
                    lease_s=self.settings.run_lease_s,
                )
                if not items:
                    report.status = "success"
                    break
                report.batches += 1
                if not self._process(source, items, report):
                    report.status = "partial"
                    break
        except DependencyError:
            report.status = "failed"
            raise
        finally:
            elapsed = utc_now() - started
            report.duration_ms = round(elapsed.total_seconds() * 1000)

    def _process(
        self, source: MediaSource, items: list[MediaItem], report: _SourceReport
    ) -> bool:
        """Work one batch; False when the time budget stopped it short."""
        worker = self._worker_for(source)
        futures: list[Future[_ItemResult]] = [
            self.pool.submit(worker, source, item) for item in items
        ]
        completed = True
        try:
            for future in as_completed(futures):
                result = future.result()
                if result.outcome == "not_started":
                    completed = False
                    continue
                self._record(source, result, report)
        except BaseException:
            self.stopping.set()
            for pending in futures:
                pending.cancel()
            raise
        return completed

    def _worker_for(
        self, source: MediaSource
    ) -> Callable[[MediaSource, MediaItem], _ItemResult]:
        if source.kind != "video":
            return self._guarded(self._migrate_image)
        problem = self._ffmpeg()
        if problem is None:
            return self._guarded(self._migrate_video)

        def no_ffmpeg(source: MediaSource, item: MediaItem) -> _ItemResult:
            return _ItemResult(item, "failed", reason=problem)

        return no_ffmpeg

    def _ffmpeg(self) -> str | None:
        """Why videos cannot be transcoded in this runtime, or None."""
        if not self._ffmpeg_checked:
            from housekeeper.media.videos import ffmpeg_path

            self._ffmpeg_checked = True
            try:
                # The second call checks that the resolved path is a file.
                ffmpeg_path(ffmpeg_path())
            except MediaError as exc:
                self._ffmpeg_problem = exc.message
                logger.error("videos cannot be migrated: %s", exc.message)
        return self._ffmpeg_problem

    def _guarded(
        self, work: Callable[[MediaSource, MediaItem], _ItemResult]
    ) -> Callable[[MediaSource, MediaItem], _ItemResult]:
        def run_item(source: MediaSource, item: MediaItem) -> _ItemResult:
            if self.stopping.is_set() or self.ctx.out_of_time():
                return _ItemResult(item, "not_started")
            try:
                return work(source, item)
            except MediaExpiredError as exc:
                reason = _scrub(exc.message, item.url)
                return _ItemResult(item, "expired", reason=reason)
            except MediaError as exc:
                return _ItemResult(item, "failed", reason=_scrub(exc.message, item.url))
            except DependencyError:
                raise
            except Exception as exc:
                # One odd file must not end the run: the item fails and the
                # batch goes on. The stack is logged once, frames only: the
                # exception's own text may quote the signed URL.
                detail = _scrub(str(exc), item.url)
                reason = f"internal error: {type(exc).__name__}: {detail}"
                logger.warning(
                    "%s row %s[%d]: %s\n%s",
                    source.name,
                    item.row_id,
                    item.position,
                    reason,
                    "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
                )
                return _ItemResult(item, "failed", reason=reason)

        return run_item

    def _expired_before_download(self, item: MediaItem) -> _ItemResult | None:
        from housekeeper.media.download import url_expired, url_expiry

        if not url_expired(item.url, utc_now()):
            return None
        expiry = url_expiry(item.url)
        return _ItemResult(
            item,
            "expired",
            reason=f"signed URL expired at {iso(expiry)} (oe=); not downloaded",
        )

    def _migrate_image(self, source: MediaSource, item: MediaItem) -> _ItemResult:
        from housekeeper.media.download import download
        from housekeeper.media.images import fit_image
        from housekeeper.media.storage import object_key, sha256_hex

        expired = self._expired_before_download(item)
        if expired is not None:
            return expired
        fetched = download(
            item.url,
            kind="image",
            max_bytes=int(self.settings.media_max_image_mb * 1024 * 1024),
            timeout_s=self.settings.media_download_timeout_s,
            client=self.http,
        )
        assert fetched.data is not None
        with self._cpu():
            fitted = fit_image(fetched.data, target_kb=self.settings.image_target_kb)
        digest = sha256_hex(fitted.data)
        key = object_key(source.key_prefix, item.row_id, item.position, digest, "jpg")
        return self._store(
            item, key, fitted.data, fitted.content_type, fetched.size_bytes, False
        )

    def _migrate_video(self, source: MediaSource, item: MediaItem) -> _ItemResult:
        from housekeeper.media.download import download
        from housekeeper.media.storage import object_key, sha256_hex
        from housekeeper.media.videos import transcode_video

        expired = self._expired_before_download(item)
        if expired is not None:
            return expired
        fetched = download(
            item.url,
            kind="video",
            max_bytes=int(self.settings.media_max_video_mb * 1024 * 1024),
            timeout_s=self.settings.media_download_timeout_s,
            client=self.http,
            tmp_dir=Path(self.work_dir.name),
        )
        output = Path(self.work_dir.name) / f"{fetched.sha256[:32]}-{item.position}.mp4"
        try:
            with self._cpu():
                video = transcode_video(
                    fetched.path or Path(),
                    output,
                    target_mb=self.settings.video_target_mb,
                    threads=self.ffmpeg_threads,
                )
            key = object_key(
                source.key_prefix, item.row_id, item.position, sha256_hex(output), "mp4"
            )
            return self._store(
                item,
                key,
                output,
                video.content_type,
                fetched.size_bytes,
                not video.met_target,
            )
        finally:
            fetched.discard()
            output.unlink(missing_ok=True)

    def _store(
        self,
        item: MediaItem,
        key: str,
        body: bytes | Path,
        content_type: str,
        bytes_in: int,
        over_target: bool,
    ) -> _ItemResult:
        size = body.stat().st_size if isinstance(body, Path) else len(body)
        self.storage.put(key, body, content_type)
        # The row is only ever pointed at an object that HEAD has confirmed.
        info = self.storage.head(key)
        if info is None or info.size_bytes != size:
            found = "missing" if info is None else f"{info.size_bytes} bytes"
            return _ItemResult(
                item,
                "failed",
                reason=f"R2 object {key} failed verification: {found}, "
                f"expected {size} bytes",
                key=key,
                bytes_in=bytes_in,
            )
        return _ItemResult(
            item,
            "uploaded",
            key=key,
            public_url=self.storage.public_url(key),
            bytes_in=bytes_in,
            bytes_out=size,
            over_target=over_target,
        )

    @contextmanager
    def _cpu(self) -> Iterator[None]:
        with self.cpu:
            yield

    def _record(
        self, source: MediaSource, result: _ItemResult, report: _SourceReport
    ) -> None:
        item = result.item
        status = result.outcome
        reason = result.reason
        if status == "uploaded":
            assert result.public_url is not None
            if self.ctx.db.media_swap(source, item, result.public_url):
                status = "migrated"
            else:
                status = "skipped"
                reason = "the row's URL changed during the migration; not updated"

        recorded = self.ctx.db.media_record(
            item,
            run_id=self.ctx.run_id,
            status=status,
            error=reason,
            r2_key=result.key if status == "migrated" else None,
            bytes_in=result.bytes_in,
            bytes_out=result.bytes_out if status == "migrated" else None,
            retry_base_s=self.settings.media_retry_base_s,
            retry_max_s=max(RETRY_MAX_S, self.settings.media_retry_base_s),
        )
        if not recorded.get("updated"):
            logger.warning(
                "%s row %s[%d]: the claim was taken over; outcome %s not recorded",
                source.name,
                item.row_id,
                item.position,
                status,
            )

        report.total += 1
        setattr(report, status, getattr(report, status) + 1)
        report.bytes_in += result.bytes_in or 0
        if status == "migrated":
            report.bytes_out += result.bytes_out or 0
            report.over_target += int(result.over_target)
        if reason is not None and status != "migrated":
            logger.warning(
                "%s row %s[%d] %s: %s",
                source.name,
                item.row_id,
                item.position,
                status,
                reason,
            )
            if len(self.samples) < MAX_ERROR_SAMPLES:
                self.samples.append(
                    {
                        "source": source.name,
                        "row_id": item.row_id,
                        "position": item.position,
                        "status": status,
                        "reason": reason,
                    }
                )
