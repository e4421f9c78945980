"""Extra RabbitMQ nodes beside the default one, for the TLS and cluster tests.

The recipe of ``shared/DESIGN.md``: each node has its own env file (the system-wide one
names the default node), config file, data and log folders, AMQP and distribution ports
(never 25672, the default node's), and runs as the ``rabbitmq`` user. A test stops
exactly the nodes it started and removes their folder; the default node is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
HOME = "/var/lib/rabbitmq"

__all__ = ["Node", "free_port", "need_rabbitmq_nodes", "node_folder"]


def need_rabbitmq_nodes() -> None:
    """Skip (with the reason) where extra nodes cannot be started: root and the
    rabbitmq-server package are needed."""
    if os.geteuid() != 0:
        pytest.skip("starting extra RabbitMQ nodes needs root (they run as 'rabbitmq')")
    if not Path(SERVER).exists() or shutil.which("rabbitmqctl") is None:
        pytest.skip(f"no RabbitMQ server here ({SERVER})")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_folder() -> Path:
    """A fresh folder the rabbitmq user can enter."""
    base = Path(tempfile.mkdtemp(prefix="saga-rabbit-"))
    base.chmod(0o755)
    return base


@dataclass
class Node:
    """One extra node: ``name@localhost`` with its folder under ``base``."""

    name: str
    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    config: str = ""
    """Extra rabbitmq.conf lines (the TCP listener is set unless ``config`` sets one)."""

    @classmethod
    def new(cls, prefix: str, base: Path, *, config: str = "") -> Node:
        """A node with a unique name (no clash with a node left by another run)."""
        return cls(name=f"{prefix}-{uuid.uuid4().hex[:6]}", base=base, config=config)

    @property
    def node(self) -> str:
        """The Erlang node name."""
        return f"{self.name}@localhost"

    @property
    def folder(self) -> Path:
        """This node's own folder."""
        return self.base / self.name

    def url(self, scheme: str = "amqp", host: str = "127.0.0.1") -> str:
        """Its AMQP URL (guest, which may log in from anywhere here)."""
        return f"{scheme}://guest:guest@{host}:{self.port}/"

    def write_files(self) -> None:
        """Env file, config file and an empty plugin list (no management: faster start)."""
        d = self.folder
        d.mkdir(parents=True, exist_ok=True)
        (d / "env.conf").write_text(
            f"NODENAME={self.node}\nNODE_PORT={self.port}\nDIST_PORT={self.dist_port}\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
        )
        listener = "" if "listeners." in self.config else f"listeners.tcp.default = {self.port}\n"
        (d / "rabbitmq.conf").write_text(f"{listener}loopback_users = none\n{self.config}")
        (d / "plugins").write_text("[].\n")
        subprocess.run(["chown", "-R", "rabbitmq", str(self.base)], check=True)

    def launch(self) -> None:
        """Start the server in the background (its output in ``out``)."""
        d = self.folder
        env = (
            f"cd {HOME}; HOME={HOME} RABBITMQ_CONF_ENV_FILE={d}/env.conf "
            f"RABBITMQ_CONFIG_FILE={d}/rabbitmq.conf RABBITMQ_MNESIA_BASE={d}/mnesia "
            f"RABBITMQ_LOG_BASE={d}/log RABBITMQ_ENABLED_PLUGINS_FILE={d}/plugins "
            f"nohup {SERVER} >> {d}/out 2>&1 &"
        )
        subprocess.run(["su", "rabbitmq", "-s", "/bin/sh", "-c", env], check=True)

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <node> args``."""
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def actl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``ctl`` off the event loop."""
        return await asyncio.to_thread(self.ctl, *args, timeout=timeout)

    async def wait_running(self, timeout: float = 150.0) -> None:
        """Until the node's app runs (``await_startup``), or fail with its output."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            done = await self.actl("await_startup", "--timeout", "20", timeout=30)
            if done.returncode == 0:
                return
            await asyncio.sleep(1.0)  # the node's distribution is not up yet; poll again
        out = (self.folder / "out").read_text(errors="replace")[-3000:]
        raise AssertionError(f"RabbitMQ node {self.node} did not start in {timeout}s:\n{out}")

    def os_pid(self) -> int:
        """The node's Erlang VM process id."""
        done = self.ctl("eval", "list_to_integer(os:getpid()).")
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    def sigkill(self) -> int:
        """Kill the node's VM at once, as a crash would; returns its pid."""
        pid = self.os_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Stop this node (and only it); SIGKILL it if it does not stop."""
        done = self.ctl("stop", timeout=60)
        if done.returncode != 0 and "nodedown" not in (done.stderr + done.stdout):
            with contextlib.suppress(AssertionError, ProcessLookupError):
                os.kill(self.os_pid(), signal.SIGKILL)
