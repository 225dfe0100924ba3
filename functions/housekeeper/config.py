"""Every setting, read from the environment once and validated.

`SETTINGS` documents each variable (name, default, meaning); the README's
settings table is checked against it by a test, so the two cannot drift.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import parse_qsl, unquote

from housekeeper.errors import ConfigurationError

MediaKind = Literal["image", "image_array", "video"]
MEDIA_KINDS: tuple[str, ...] = ("image", "image_array", "video")


@dataclass(frozen=True)
class SettingDoc:
    """One environment variable as the README documents it."""

    name: str
    default: str
    meaning: str


SETTINGS: tuple[SettingDoc, ...] = (
    SettingDoc("CRON_SECRET", "none", "Bearer secret every job request must carry."),
    SettingDoc(
        "CRON_SECRET_PREVIOUS",
        "none",
        "Previous bearer secret, still accepted during a rotation.",
    ),
    SettingDoc(
        "DATABASE_URL",
        "none",
        "Direct Postgres connection string; wins over Supabase when both are set.",
    ),
    SettingDoc("SUPABASE_URL", "none", "Supabase project URL (the RPC transport)."),
    SettingDoc(
        "SUPABASE_SERVICE_ROLE_KEY", "none", "Supabase service-role key for the RPCs."
    ),
    SettingDoc(
        "SUPABASE_CONNECT_TIMEOUT_S", "5", "Connect timeout of each Supabase RPC."
    ),
    SettingDoc("SUPABASE_READ_TIMEOUT_S", "30", "Read timeout of each Supabase RPC."),
    SettingDoc(
        "DB_CONNECT_TIMEOUT_S",
        "10",
        "Connect timeout of the direct Postgres transport.",
    ),
    SettingDoc(
        "LOGS_TABLE", "logs", "Table that cleanup-logs purges (`schema.table` allowed)."
    ),
    SettingDoc(
        "LOGS_TIMESTAMP_COLUMN",
        "timestamp",
        "Its `timestamptz` or `timestamp` (UTC) column.",
    ),
    SettingDoc(
        "RETENTION_DAYS", "30", "Retention when a request names none (1..3650)."
    ),
    SettingDoc(
        "PURGE_BATCH_TARGET_MS",
        "50",
        "Target duration of one purge transaction; batches adapt to it.",
    ),
    SettingDoc("LOG_DIR", "logs", "Folder the file sweep cleans; empty disables it."),
    SettingDoc(
        "LOG_FILE_PATTERNS",
        "*.log,*.log.*",
        "Comma-separated file-name patterns the sweep may delete.",
    ),
    SettingDoc(
        "FUNCTION_TIMEOUT_S",
        "540",
        "Timeout of the deployed function; the lease and time budget derive from it.",
    ),
    SettingDoc(
        "TIME_BUDGET_S",
        "FUNCTION_TIMEOUT_S - 60",
        "Time after which a run stops cleanly with status `partial`.",
    ),
    SettingDoc(
        "RUN_LEASE_S",
        "FUNCTION_TIMEOUT_S + 120",
        "Age after which a running run's lock is taken over and marked abandoned.",
    ),
    SettingDoc(
        "LOG_FORMAT", "auto", "`json` or `text`; `auto` is JSON on Cloud Functions."
    ),
    SettingDoc("LOG_LEVEL", "INFO", "Lowest level that is logged."),
    SettingDoc(
        "OVERDUE_AFTER_H",
        "26",
        "Hours without a success after which `health?deep=1` calls a job overdue: "
        "one number, or per job as `cleanup-logs=26,migrate-cdn-to-r2=8`.",
    ),
    SettingDoc(
        "R2_ACCOUNT_ID", "none", "Cloudflare account id; gives the R2 endpoint."
    ),
    SettingDoc(
        "R2_ENDPOINT_URL", "none", "Explicit S3 endpoint; wins over `R2_ACCOUNT_ID`."
    ),
    SettingDoc("R2_ACCESS_KEY_ID", "none", "R2 access key id."),
    SettingDoc("R2_SECRET_ACCESS_KEY", "none", "R2 secret access key."),
    SettingDoc("R2_BUCKET", "none", "R2 bucket that receives the media."),
    SettingDoc("R2_PUBLIC_URL", "none", "Public base URL of that bucket."),
    SettingDoc("IMAGE_TARGET_KB", "300", "Largest size of a migrated image."),
    SettingDoc("VIDEO_TARGET_MB", "1.5", "Size a migrated video aims at."),
    SettingDoc(
        "MEDIA_CDN_HOSTS",
        "cdninstagram.com,fbcdn.net",
        "Hosts (and their subdomains) whose URLs are migrated.",
    ),
    SettingDoc(
        "MEDIA_SOURCES",
        "the three defaults",
        "JSON list replacing the default sources.",
    ),
    SettingDoc("MEDIA_MAX_IMAGE_MB", "25", "Largest image download accepted."),
    SettingDoc("MEDIA_MAX_VIDEO_MB", "200", "Largest video download accepted."),
    SettingDoc("MEDIA_DOWNLOAD_TIMEOUT_S", "60", "Total time one download may take."),
    SettingDoc("MEDIA_CONCURRENCY", "4", "Downloads and uploads in flight at once."),
    SettingDoc(
        "MEDIA_RETRY_BASE_S",
        "900",
        "First backoff after a failed item; doubles per attempt.",
    ),
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
_KEYWORD_PASSWORD = re.compile(r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")


@dataclass(frozen=True)
class MediaSource:
    """A column of CDN URLs to migrate, declared rather than coded."""

    name: str
    table: str
    id_column: str
    url_column: str
    kind: MediaKind
    key_prefix: str
    media_type: str


DEFAULT_MEDIA_SOURCES: tuple[MediaSource, ...] = (
    MediaSource(
        "creators",
        "instagram_creators",
        "id",
        "profile_pic_url",
        "image",
        "profiles",
        "profile",
    ),
    MediaSource(
        "posts", "instagram_posts", "id", "image_urls", "image_array", "posts", "posts"
    ),
    MediaSource(
        "reels", "instagram_reels", "id", "video_url", "video", "reels", "reels"
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one process."""

    cron_secret: str | None = None
    cron_secret_previous: str | None = None
    database_url: str | None = None
    supabase_url: str | None = None
    supabase_service_role_key: str | None = None
    supabase_connect_timeout_s: float = 5.0
    supabase_read_timeout_s: float = 30.0
    db_connect_timeout_s: float = 10.0
    logs_table: str = "logs"
    logs_timestamp_column: str = "timestamp"
    retention_days: int = 30
    purge_batch_target_ms: int = 50
    log_dir: str = "logs"
    log_file_patterns: tuple[str, ...] = ("*.log", "*.log.*")
    function_timeout_s: int = 540
    time_budget_s: float = 480.0
    run_lease_s: int = 660
    log_format: str = "auto"
    log_level: str = "INFO"
    overdue_after_h: float = 26.0
    overdue_after_h_by_job: tuple[tuple[str, float], ...] = ()
    r2_account_id: str | None = None
    r2_endpoint_url: str | None = None
    r2_access_key_id: str | None = None
    r2_secret_access_key: str | None = None
    r2_bucket: str | None = None
    r2_public_url: str | None = None
    image_target_kb: int = 300
    video_target_mb: float = 1.5
    media_cdn_hosts: tuple[str, ...] = ("cdninstagram.com", "fbcdn.net")
    media_sources: tuple[MediaSource, ...] = DEFAULT_MEDIA_SOURCES
    media_max_image_mb: float = 25.0
    media_max_video_mb: float = 200.0
    media_download_timeout_s: float = 60.0
    media_concurrency: int = 4
    media_retry_base_s: int = 900

    @property
    def transport(self) -> str | None:
        """`postgres`, `supabase` or None when no database is configured."""
        if self.database_url:
            return "postgres"
        if self.supabase_url and self.supabase_service_role_key:
            return "supabase"
        return None

    def overdue_after_h_for(self, job: str) -> float:
        """The freshness threshold of one job, for `health?deep=1`."""
        return dict(self.overdue_after_h_by_job).get(job, self.overdue_after_h)

    @property
    def r2_endpoint(self) -> str | None:
        """The S3 endpoint of the account, or the explicit one."""
        if self.r2_endpoint_url:
            return self.r2_endpoint_url
        if self.r2_account_id:
            return f"https://{self.r2_account_id}.r2.cloudflarestorage.com"
        return None

    def secret_values(self) -> tuple[str, ...]:
        """Every configured value that must never reach a log line or a response."""
        values = [
            self.cron_secret,
            self.cron_secret_previous,
            self.supabase_service_role_key,
            self.r2_access_key_id,
            self.r2_secret_access_key,
            *_passwords_of(self.database_url),
        ]
        return tuple(v for v in values if v and len(v) >= 4)


def _passwords_of(dsn: str | None) -> list[str]:
    """The password of a connection string, as written and percent-decoded.

    libpq takes a URI (`postgresql://user:password@host/db`, or a
    `?password=` parameter) and the keyword form (`host=h password=p`).
    urlsplit cannot be trusted with a URI: a password containing '/', '#' or
    '@' (common in generated ones) breaks its netloc parsing, so both the
    reading libpq makes (up to the first '@') and the one a person meant (up
    to the last '@' before the host) are kept.
    """
    if not dsn:
        return []
    found: list[str] = []
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        before_query = rest.split("?", 1)[0]
        libpq_reading = re.match(r"([^@/]*)@", rest)
        for credentials in (
            libpq_reading.group(1) if libpq_reading else "",
            before_query.rsplit("@", 1)[0] if "@" in before_query else "",
        ):
            if ":" in credentials:
                found.append(credentials.split(":", 1)[1])
        query = rest.split("?", 1)[1] if "?" in rest else ""
        found += [
            v for k, v in parse_qsl(query, keep_blank_values=True) if k == "password"
        ]
    else:
        for match in _KEYWORD_PASSWORD.finditer(dsn):
            value = match.group(1)
            if value.startswith("'") and value.endswith("'") and len(value) > 1:
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            found.append(value)
    return sorted({value for raw in found for value in (raw, unquote(raw)) if value})


def _database_url(env: Mapping[str, str]) -> str | None:
    """DATABASE_URL, refused when its password would be misread.

    libpq ends the user information at the first '@' and the host at the first
    '/', so an unencoded '@', '/', '?' or '#' in a password sends part of the
    password to a resolver as a host name, and into error messages.
    """
    url = _text(env, "DATABASE_URL")
    if url is None or "://" not in url:
        return url
    rest = url.split("://", 1)[1]
    if "@" in rest:
        credentials = rest.rsplit("@", 1)[0]
        if any(char in credentials for char in "@/?#"):
            raise ConfigurationError(
                "DATABASE_URL: percent-encode the special characters of the user "
                "and password (@ as %40, / as %2F, ? as %3F, # as %23, : as %3A)"
            )
    return url


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(f"{name} must be {kind}, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{name} must be between {low:g} and {high:g}")
    return value


def _list(
    env: Mapping[str, str], name: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    raw = _text(env, name)
    if raw is None:
        return default
    items = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not items:
        raise ConfigurationError(f"{name} must name at least one entry")
    return items


def _overdue(env: Mapping[str, str]) -> tuple[float, tuple[tuple[str, float], ...]]:
    raw = _text(env, "OVERDUE_AFTER_H")
    if raw is None or "=" not in raw:
        return _number(env, "OVERDUE_AFTER_H", 26.0, low=1, high=24 * 90), ()
    by_job: list[tuple[str, float]] = []
    for item in raw.split(","):
        job, _, hours = item.partition("=")
        try:
            value = float(hours)
        except ValueError:
            value = -1.0
        if not job.strip() or not 1 <= value <= 24 * 90:
            raise ConfigurationError(
                "OVERDUE_AFTER_H must be hours (1..2160), or job=hours pairs "
                f"separated by commas; got {item.strip()!r}"
            )
        by_job.append((job.strip(), value))
    return 26.0, tuple(by_job)


def validate_identifier(value: str, what: str) -> str:
    """Accept `name` or `schema.name` made of plain SQL identifier characters."""
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise ConfigurationError(
            f"{what} {value!r} is not a valid identifier "
            "(letters, digits, _ and $, optionally schema-qualified)"
        )
    return value


def _media_sources(env: Mapping[str, str]) -> tuple[MediaSource, ...]:
    raw = _text(env, "MEDIA_SOURCES")
    if raw is None:
        return DEFAULT_MEDIA_SOURCES
    try:
        entries = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"MEDIA_SOURCES is not valid JSON: {exc.msg}"
        ) from None
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError("MEDIA_SOURCES must be a non-empty JSON list")
    sources = []
    for index, entry in enumerate(entries):
        where = f"MEDIA_SOURCES[{index}]"
        if not isinstance(entry, dict):
            raise ConfigurationError(f"{where} must be an object")
        try:
            kind = entry["kind"]
            source = MediaSource(
                name=str(entry["name"]),
                table=validate_identifier(str(entry["table"]), f"{where}.table"),
                id_column=validate_identifier(
                    str(entry.get("id_column", "id")), f"{where}.id_column"
                ),
                url_column=validate_identifier(
                    str(entry["url_column"]), f"{where}.url_column"
                ),
                kind=kind,
                key_prefix=str(entry.get("key_prefix", entry["name"])).strip("/"),
                media_type=str(entry.get("media_type", entry["name"])),
            )
        except KeyError as exc:
            raise ConfigurationError(f"{where} lacks {exc.args[0]!r}") from None
        if kind not in MEDIA_KINDS:
            raise ConfigurationError(
                f"{where}.kind must be one of {', '.join(MEDIA_KINDS)}"
            )
        sources.append(source)
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ConfigurationError("MEDIA_SOURCES names must be unique")
    return tuple(sources)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting; a bad one raises `ConfigurationError`."""
    env = os.environ if env is None else env

    function_timeout_s = int(
        _number(env, "FUNCTION_TIMEOUT_S", 540, low=1, high=3600, integer=True)
    )
    log_format = (_text(env, "LOG_FORMAT") or "auto").lower()
    if log_format not in ("auto", "json", "text"):
        raise ConfigurationError("LOG_FORMAT must be auto, json or text")
    log_level = (_text(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    overdue_default, overdue_by_job = _overdue(env)
    hosts = tuple(
        h.lower().lstrip(".")
        for h in _list(env, "MEDIA_CDN_HOSTS", ("cdninstagram.com", "fbcdn.net"))
    )

    return Settings(
        # An empty secret is the same as none: fail closed. Surrounding
        # whitespace (a newline kept by a secret store) would never match.
        cron_secret=_text(env, "CRON_SECRET"),
        cron_secret_previous=_text(env, "CRON_SECRET_PREVIOUS"),
        database_url=_database_url(env),
        supabase_url=_text(env, "SUPABASE_URL"),
        supabase_service_role_key=_text(env, "SUPABASE_SERVICE_ROLE_KEY"),
        supabase_connect_timeout_s=_number(
            env, "SUPABASE_CONNECT_TIMEOUT_S", 5.0, low=0.1, high=120
        ),
        supabase_read_timeout_s=_number(
            env, "SUPABASE_READ_TIMEOUT_S", 30.0, low=0.1, high=600
        ),
        db_connect_timeout_s=_number(
            env, "DB_CONNECT_TIMEOUT_S", 10.0, low=1, high=120
        ),
        logs_table=validate_identifier(
            _text(env, "LOGS_TABLE") or "logs", "LOGS_TABLE"
        ),
        logs_timestamp_column=validate_identifier(
            _text(env, "LOGS_TIMESTAMP_COLUMN") or "timestamp", "LOGS_TIMESTAMP_COLUMN"
        ),
        retention_days=int(
            _number(env, "RETENTION_DAYS", 30, low=1, high=3650, integer=True)
        ),
        purge_batch_target_ms=int(
            _number(env, "PURGE_BATCH_TARGET_MS", 50, low=5, high=5000, integer=True)
        ),
        log_dir=env.get("LOG_DIR", "logs").strip(),
        log_file_patterns=_list(env, "LOG_FILE_PATTERNS", ("*.log", "*.log.*")),
        function_timeout_s=function_timeout_s,
        time_budget_s=_number(
            env,
            "TIME_BUDGET_S",
            max(function_timeout_s - 60, function_timeout_s * 0.8),
            low=1,
            high=function_timeout_s,
        ),
        run_lease_s=int(
            _number(
                env,
                "RUN_LEASE_S",
                function_timeout_s + 120,
                low=function_timeout_s,
                high=86400,
                integer=True,
            )
        ),
        log_format=log_format,
        log_level=log_level,
        overdue_after_h=overdue_default,
        overdue_after_h_by_job=overdue_by_job,
        r2_account_id=_text(env, "R2_ACCOUNT_ID"),
        r2_endpoint_url=_text(env, "R2_ENDPOINT_URL"),
        r2_access_key_id=_text(env, "R2_ACCESS_KEY_ID"),
        r2_secret_access_key=_text(env, "R2_SECRET_ACCESS_KEY"),
        r2_bucket=_text(env, "R2_BUCKET"),
        r2_public_url=(_text(env, "R2_PUBLIC_URL") or "").rstrip("/") or None,
        image_target_kb=int(
            _number(env, "IMAGE_TARGET_KB", 300, low=10, high=100_000, integer=True)
        ),
        video_target_mb=_number(env, "VIDEO_TARGET_MB", 1.5, low=0.1, high=1000),
        media_cdn_hosts=hosts,
        media_sources=_media_sources(env),
        media_max_image_mb=_number(env, "MEDIA_MAX_IMAGE_MB", 25.0, low=0.1, high=500),
        media_max_video_mb=_number(
            env, "MEDIA_MAX_VIDEO_MB", 200.0, low=0.1, high=5000
        ),
        media_download_timeout_s=_number(
            env, "MEDIA_DOWNLOAD_TIMEOUT_S", 60.0, low=1, high=3600
        ),
        media_concurrency=int(
            _number(env, "MEDIA_CONCURRENCY", 4, low=1, high=64, integer=True)
        ),
        media_retry_base_s=int(
            _number(env, "MEDIA_RETRY_BASE_S", 900, low=1, high=86400 * 7, integer=True)
        ),
    )


def _snapshot() -> tuple[tuple[str, str], ...]:
    names = {doc.name for doc in SETTINGS}
    return tuple(sorted((k, v) for k, v in os.environ.items() if k in names))


@lru_cache(maxsize=4)
def _cached(snapshot: tuple[tuple[str, str], ...]) -> Settings:
    return load_settings(dict(snapshot))


def get_settings() -> Settings:
    """The settings of this process, validated once per distinct environment."""
    return _cached(_snapshot())
