"""The functions-framework emulator, one target per process, on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.postgres import free_port

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"


@dataclass
class Emulator:
    """`functions-framework --target TARGET` on 127.0.0.1, with its own env."""

    target: str
    env: Mapping[str, str]
    port: int = 0
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout_s: float = 30.0) -> Emulator:
        """Start the server and wait until it accepts connections."""
        self.port = self.port or free_port()
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(FUNCTIONS_DIR), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        command = [
            sys.executable, "-m", "functions_framework",
            "--target", self.target,
            "--source", str(FUNCTIONS_DIR / "main.py"),
            "--host", "127.0.0.1",
            "--port", str(self.port),
        ]  # fmt: skip
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                command,
                cwd=FUNCTIONS_DIR,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own process group: gunicorn serves from a worker
                # process, which must end with the server it belongs to.
                start_new_session=True,
            )
        finally:
            if not isinstance(output, int):
                # The child holds its own descriptor for the file.
                output.close()

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"emulator {self.target} exited ({code}){where}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"emulator {self.target} did not start in {timeout_s}s")

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        # The group id is the server's pid; it names nothing else while a
        # member lives, and an empty group is simply gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def stop(self) -> None:
        """Stop the server and its workers (SIGTERM, then SIGKILL after 10 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait(timeout=10)
        # A worker that outlived its server (it was killed) goes too.
        self._signal(signal.SIGKILL)

    def kill(self) -> None:
        """End the server and its workers at once (SIGKILL), as a crash would."""
        if self.process is None:
            return
        self._signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
