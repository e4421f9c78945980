"""Profiling the services during each measured window.

py-spy, when it is on the PATH (``uv tool install py-spy``), samples each service from
outside at 100 Hz: the services do not slow down, though py-spy's own CPU shows up as
other load. Otherwise pyinstrument runs inside each service (the probe starts and stops
it on SIGUSR1/SIGUSR2); it is always installed with the dev dependencies but slows the
services down several times, so its call trees are useful and its rates are not.
Files are named ``<service>@c<sagas in flight>``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

from orchestrator.dev.bench.probe import PROFILE_ENV
from orchestrator.dev.bench.profile import py_spy_samples, pyinstrument_samples, summarize

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from orchestrator.dev.processes import ServiceProcess

__all__ = ["Profilers", "available_profiler"]

PY_SPY_RATE = 100


def available_profiler() -> str:
    """``py-spy`` if it is installed, else ``pyinstrument``."""
    return "py-spy" if shutil.which("py-spy") else "pyinstrument"


class Profilers:
    """One profiler per service, started and stopped at the window's edges."""

    def __init__(self, directory: Path, *, kind: str) -> None:
        self.directory = directory
        self.kind = kind
        self._spies: list[subprocess.Popen[bytes]] = []
        directory.mkdir(parents=True, exist_ok=True)

    def env_for(self, service: str) -> dict[str, str]:
        """Environment for a service process (pyinstrument runs inside it)."""
        if self.kind != "pyinstrument":
            return {}
        return {PROFILE_ENV: str(self.directory / service)}

    def begin(self, services: Mapping[str, ServiceProcess], label: str) -> None:
        """Start profiling every service."""
        for name, process in services.items():
            if process.pid is None:
                continue
            if self.kind == "pyinstrument":
                os.kill(process.pid, signal.SIGUSR1)
                continue
            out = self.directory / f"{name}@{label}.txt"
            command = ["py-spy", "record", "-p", str(process.pid), "--nonblocking"]
            command += ["--rate", str(PY_SPY_RATE), "--format", "raw", "-o", str(out)]
            self._spies.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def end(self, services: Mapping[str, ServiceProcess], label: str) -> None:
        """Stop profiling; py-spy writes its file on SIGINT, pyinstrument on SIGUSR2."""
        for spy in self._spies:
            spy.send_signal(signal.SIGINT)
        for spy in self._spies:
            spy.wait(timeout=30)
        self._spies.clear()
        if self.kind == "pyinstrument":
            for name, process in services.items():
                if process.pid is not None:
                    self._save_pyinstrument(name, process.pid, label)

    def _save_pyinstrument(self, name: str, pid: int, label: str) -> None:
        written = self.directory / f"{name}.pyisession"
        before = written.stat().st_mtime if written.exists() else 0.0
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if written.exists() and written.stat().st_mtime != before:
                time.sleep(0.2)  # the text call tree is written right after the session
                written.rename(self.directory / f"{name}@{label}.pyisession")
                return
            time.sleep(0.05)

    def summaries(self) -> dict[str, Any]:
        """A summary per ``<service>@<level>`` profile found."""
        found: dict[str, Any] = {}
        for path in sorted(self.directory.glob("*@*.txt")):
            found[path.stem] = summarize(py_spy_samples(path, rate=PY_SPY_RATE))
        for path in sorted(self.directory.glob("*@*.pyisession")):
            found[path.stem] = summarize(pyinstrument_samples(path))
        return found
