"""The job registry: job id to module, imported only when that job runs."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only a type: importing the run machinery (and the database layer behind
    # it) here would put it on the health check's cold start.
    from housekeeper.runs import Job

JOB_MODULES: dict[str, str] = {
    "cleanup-logs": "housekeeper.jobs.log_cleanup",
    "migrate-cdn-to-r2": "housekeeper.jobs.media_migration",
}


def load_job(name: str) -> Job:
    """Import the module behind a job id; heavy imports stay out of cold starts."""
    module: Job = importlib.import_module(JOB_MODULES[name])
    return module


def available_jobs() -> list[str]:
    """Every job id, in a stable order."""
    return sorted(JOB_MODULES)
