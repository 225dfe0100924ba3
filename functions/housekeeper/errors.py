"""The error tree: every error a caller can see carries an HTTP status and a code.

`http.error_response` is the one place that turns these into
`{"error": {"code", "message"}}`. Anything that is not a `HousekeeperError`
becomes a generic 500 whose traceback is logged once.
"""

from __future__ import annotations

from typing import Any


class HousekeeperError(Exception):
    """Base class. Raised only through a subclass."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidParameterError(HousekeeperError):
    """A request parameter is missing, malformed, out of range or given twice."""

    status = 400
    code = "invalid_parameter"

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message, details={"parameter": parameter})
        self.parameter = parameter


class UnauthorizedError(HousekeeperError):
    """The bearer token is missing, malformed, of another scheme or wrong."""

    status = 401
    code = "unauthorized"


class MethodNotAllowedError(HousekeeperError):
    """The target does not answer this HTTP method."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"method {method} is not allowed; use {', '.join(allowed)}")
        self.allowed = allowed


class ConfigurationError(HousekeeperError):
    """A setting is missing or invalid, so the function refuses to work."""

    status = 500
    code = "configuration_error"


class DependencyError(HousekeeperError):
    """A dependency (database, storage) failed; the run did not complete.

    `partial` carries the counts reached before the failure so that a caller
    sees what was done.
    """

    status = 503
    code = "dependency_unavailable"

    def __init__(
        self,
        message: str,
        *,
        partial: dict[str, Any] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.partial = partial or {}


class DatabaseUnavailableError(DependencyError):
    """The database could not be reached or dropped the connection."""

    status = 503
    code = "database_unavailable"


class DatabaseError(DependencyError):
    """The database answered with an error the job could not work around."""

    status = 502
    code = "database_error"


class StatementTimeoutError(DatabaseError):
    """A statement hit the database's statement timeout even at the smallest batch."""

    status = 503
    code = "statement_timeout"


class LockTimeoutError(DatabaseError):
    """Another session held a lock on the table for longer than the job waits."""

    status = 503
    code = "lock_timeout"


class MigrationMissingError(DependencyError):
    """A SQL function or table that the job needs is not installed."""

    status = 503
    code = "migration_missing"


class StorageError(DependencyError):
    """Object storage (R2) refused or failed a request."""

    status = 502
    code = "storage_error"


class MediaError(HousekeeperError):
    """One media item could not be migrated; the batch goes on without it."""

    status = 422
    code = "media_error"


class MediaExpiredError(MediaError):
    """The CDN URL's signature has expired; only a new URL can be migrated."""

    code = "media_expired"


class MediaDownloadError(MediaError):
    """The download failed, was too large, too slow or not what it claimed."""

    code = "media_download_failed"


class MediaRejectedError(MediaError):
    """The content was refused before or while decoding (bomb, wrong format)."""

    code = "media_rejected"


class MediaTranscodeError(MediaError):
    """ffmpeg is missing or failed to produce a valid output."""

    code = "media_transcode_failed"
