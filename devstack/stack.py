"""The whole local stack under one folder (`.local/` by default)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from devstack.migrate import apply_migrations
from devstack.postgres import LocalPostgres

REPO = Path(__file__).resolve().parent.parent


@dataclass
class LocalStack:
    """Embedded Postgres with the migrations applied, and the settings to reach it."""

    root: Path = REPO / ".local"
    postgres: LocalPostgres = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.postgres = LocalPostgres(self.root / "postgres")

    @property
    def log_dir(self) -> Path:
        return self.root / "demo" / "logs"

    @property
    def outside_dir(self) -> Path:
        return self.root / "demo" / "outside"

    def cron_secret(self) -> str:
        """A local secret, made once and kept in `.local/cron-secret`."""
        path = self.root / "cron-secret"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def start(self) -> LocalStack:
        self.postgres.start()
        apply_migrations(self.postgres.url)
        return self

    def stop(self) -> None:
        self.postgres.stop(quiet=True)

    def env(self) -> dict[str, str]:
        """The settings a function needs to run against this stack."""
        return {
            "DATABASE_URL": self.postgres.url,
            "CRON_SECRET": self.cron_secret(),
            "LOG_DIR": str(self.log_dir),
            "LOG_FORMAT": "text",
        }
