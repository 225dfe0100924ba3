"""`python -m housekeeper`: invoke a job in-process, or list the run history."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

EXIT_OK_STATUSES = ("success", "partial", "skipped", "dry_run")
SUMMARY_WIDTH = 100


def _param(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def invoke(job: str, params: Sequence[tuple[str, str]]) -> tuple[int, dict[str, Any]]:
    """Run a job target in-process through the same request path as HTTP.

    Auth included: the bearer secret is read from `CRON_SECRET`. The run is
    recorded with trigger `local` unless a `trigger` parameter says otherwise.
    Log lines go to stderr whatever `LOG_FORMAT` says, so that stdout carries
    the JSON answer alone.
    """
    import flask

    from housekeeper.jobs import available_jobs
    from housekeeper.targets import serve_job

    if job not in available_jobs():
        return 2, {"error": {"code": "unknown_job", "message": f"unknown job {job!r}"}}
    body = {"trigger": "local", **dict(params)}
    headers = {"Content-Type": "application/json"}
    secret = os.environ.get("CRON_SECRET", "")
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    app = flask.Flask("housekeeper-cli")
    with (
        app.test_request_context("/", method="POST", headers=headers, json=body),
        contextlib.redirect_stdout(sys.stderr),
    ):
        response = serve_job(flask.request, job)
    document: dict[str, Any] = json.loads(response.get_data(as_text=True))
    status = document.get("status")
    code = 0 if response.status_code in (200, 409) and status in EXIT_OK_STATUSES else 1
    return code, document


def _short_time(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: dict[str, Any]) -> str:
    if not run.get("finished_at"):
        return "-"
    started = datetime.fromisoformat(run["started_at"])
    finished = datetime.fromisoformat(run["finished_at"])
    return f"{(finished - started).total_seconds():.1f}s"


def _flat(counts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in counts.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def format_runs(runs: Sequence[dict[str, Any]]) -> str:
    """A readable table of ledger entries, newest first (times in UTC)."""
    header = ("run_id", "job", "trigger", "status", "started (UTC)", "took", "counts")
    rows = [header]
    for run in runs:
        counts = _flat(run.get("counts") or {})
        summary = " ".join(f"{k}={v}" for k, v in counts.items() if v is not None)
        if run.get("error"):
            # First, so that the width limit cuts counts rather than the reason.
            summary = f"error: {run['error']}  {summary}".strip()
        rows.append(
            (
                str(run.get("run_id", ""))[:8],
                str(run.get("job", "")),
                str(run.get("trigger", "")),
                str(run.get("status", "")),
                _short_time(run.get("started_at")),
                _duration(run),
                summary[:SUMMARY_WIDTH],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    if not runs:
        lines.append("(no runs recorded yet)")
    return "\n".join(line.rstrip() for line in lines)


def list_runs(job: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest runs from the ledger of the configured database."""
    from housekeeper.config import get_settings
    from housekeeper.db import open_database

    with open_database(get_settings()) as db:
        return db.list_runs(job, limit)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m housekeeper`."""
    parser = argparse.ArgumentParser(
        prog="python -m housekeeper",
        description="Invoke a housekeeper job in-process, or list recent runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("invoke", help="run a job through its handler")
    run_parser.add_argument("job", help="job id, e.g. cleanup-logs")
    run_parser.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a request parameter (repeatable), e.g. --param retention_days=30",
    )
    runs_parser = commands.add_parser("runs", help="list the run ledger, newest first")
    runs_parser.add_argument("--job", help="only this job id")
    runs_parser.add_argument("--limit", type=int, default=20, help="how many (1..1000)")
    runs_parser.add_argument("--json", action="store_true", help="print JSON instead")
    args = parser.parse_args(argv)

    from housekeeper.config import get_settings
    from housekeeper.errors import HousekeeperError
    from housekeeper.telemetry import configure, redact

    if args.command == "invoke":
        code, document = invoke(args.job, args.param)
        print(json.dumps(document, indent=2))
        return code

    try:
        configure(get_settings())
        runs = list_runs(args.job, max(1, min(args.limit, 1000)))
    except HousekeeperError as exc:
        print(f"error: {redact(exc.message)}", file=sys.stderr)
        return 1
    print(json.dumps(runs, indent=2) if args.json else format_runs(runs))
    return 0
