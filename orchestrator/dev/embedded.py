"""The embedded MongoDB wire-protocol server for development and CI.

When MONGODB_URL is unset (and, in tests, Docker is unavailable), the project runs the
PyPI package ``nx-27017`` as a subprocess on a free port, with its data, pid file and log
under a project-local folder. Production uses real MongoDB; nothing here is for it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient
from pymongo.errors import PyMongoError

__all__ = ["EmbeddedMongo", "EmbeddedMongoError", "free_port"]


class EmbeddedMongoError(RuntimeError):
    """The embedded server is not installed or did not come up."""


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedMongo:
    """One ``nx-27017`` process; ``with EmbeddedMongo(folder) as url:`` or start()/stop()."""

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Connection string of the running server."""
        return f"mongodb://127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        """Where the server logs."""
        return self.folder / "nx-27017.log"

    def start(self, *, timeout: float = 30.0) -> str:
        """Start and wait until it answers a ping; returns the URL."""
        exe = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
        if not Path(exe).exists():
            raise EmbeddedMongoError(
                "nx-27017 is not installed; run 'uv sync' (it is a dev dependency), "
                "or set MONGODB_URL to a real MongoDB"
            )
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        # --data-dir keeps each database in its own file; with a single --db file the
        # server ignores database names, so databases would share collections.
        cmd = [
            exe,
            "--data-dir",
            str(data),
            "--port",
            str(self.port),
            "--pid-file",
            str(self.folder / f"nx-27017-{self.port}.pid"),
            "--log-file",
            str(self.log_file),
        ]
        with open(self.folder / "nx-27017.stdout", "ab") as out:
            self.process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        client: MongoClient[dict[str, object]] = MongoClient(self.url, serverSelectionTimeoutMS=300)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise EmbeddedMongoError(
                        f"nx-27017 exited with {self.process.returncode}; see {self.log_file}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise EmbeddedMongoError(
                            f"nx-27017 did not answer on port {self.port} within {timeout}s; "
                            f"see {self.log_file}"
                        ) from None
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        """Terminate the server (its data file stays)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
