"""Cloud Functions targets. Thin: parse, call, respond; the work is in housekeeper."""

import flask
import functions_framework

from housekeeper.targets import serve_health, serve_job


@functions_framework.http
def health(request: flask.Request) -> flask.Response:
    """GET (or HEAD), no auth. `?deep=1` checks the database and job freshness.

    200 healthy; 503 when the deep check fails; 405 for other methods.
    """
    return serve_health(request)


@functions_framework.http
def cleanup_logs(request: flask.Request) -> flask.Response:
    """POST, bearer secret. Purges the log table and folder past the retention.

    Parameters (query or JSON body): retention_days (1..3650), dry_run,
    time_budget_s, trigger, skip_if_succeeded_within.
    200 success/partial/dry_run/skipped; 400 invalid parameter; 401 bad token;
    405 wrong method; 409 another run holds the lock; 500 not configured;
    502/503 database failure, with the counts reached.
    """
    return serve_job(request, "cleanup-logs")


@functions_framework.http
def migrate_cdn_to_r2(request: flask.Request) -> flask.Response:
    """POST, bearer secret. Moves CDN media into R2 and points the rows at it.

    Parameters (query or JSON body): media_type (profile, posts, reels, all),
    batch_size (1..500, per claim), dry_run, time_budget_s, trigger,
    skip_if_succeeded_within.
    200 success/partial/dry_run/skipped; 400 invalid parameter; 401 bad token;
    405 wrong method; 409 another run holds the lock; 500 not configured (no
    R2 storage or database); 502/503 database or storage failure, with the
    counts reached.
    """
    return serve_job(request, "migrate-cdn-to-r2")
