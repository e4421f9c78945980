"""CPU per command of one participant process, for two implementations side by side.

A micro-benchmark, not ``saga bench``: no orchestrator, no saga. Each implementation (a
module run with ``python -m``, by default the aio-pika and the faststream shipping) gets
a namespace and database of its own; the driver publishes ``--commands`` commands
(persistent, confirmed, ``--in-flight`` at a time, each a new saga id, so each is one
store insert), waits for every reply, and reads the participant's ``utime + stime``
from ``/proc`` before and after. Runs alternate the order of the implementations, so a
machine that grows busier during a run does not favour one of them.

    uv run python -m orchestrator.dev.bench.participant_cpu --commands 2000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from pymongo import AsyncMongoClient

from contracts import ScheduleShipment, encode
from orchestrator.dev.bench.cpu import cpu_seconds
from orchestrator.dev.embedded import EmbeddedMongo
from orchestrator.settings import DEFAULT_AMQP_URL, Settings

__all__ = ["Measurement", "main", "measure"]

IMPLEMENTATIONS = {
    "aio-pika": "participants.shipping",
    "faststream": "participants.shipping.streams",
}
REPLY_KEY = "participant-cpu"


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One implementation, one run."""

    name: str
    commands: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_ms_per_command(self) -> float:
        """Participant CPU milliseconds per command handled and replied to."""
        return 1000 * self.cpu_seconds / self.commands


def _spawn(module: str, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ) | settings.to_env()
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _is_ready(process: subprocess.Popen[bytes], log: Path, deadline: float) -> bool:
    if b"shipping ready" in log.read_bytes():
        return True
    if process.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"participant not ready:\n{log.read_text()[-2000:]}")
    return False


async def _ready(process: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if _is_ready(process, log, deadline):
            return
        await asyncio.sleep(0.1)


async def _drive(settings: Settings, commands: int, in_flight: int) -> None:
    """Publish ``commands`` ScheduleShipment commands and wait for every reply."""
    topology = settings.topology()
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        await replies.bind(topology.replies_exchange, routing_key=REPLY_KEY)
        exchange = await channel.get_exchange(topology.commands_exchange)
        window = asyncio.Semaphore(in_flight)
        done = asyncio.Event()
        received = 0

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received
            received += 1
            window.release()
            if received == commands:
                done.set()

        await replies.consume(on_reply, no_ack=True)
        body = encode(ScheduleShipment(order_id="o", ship_to="1 Main Street", units=1))
        for _ in range(commands):
            await window.acquire()
            saga_id = uuid.uuid4().hex
            message = aio_pika.Message(
                body,
                type=ScheduleShipment.TYPE,
                correlation_id=saga_id,
                message_id=f"{saga_id}:schedule_shipment:do",
                reply_to=REPLY_KEY,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key="shipping.schedule_shipment")
        await asyncio.wait_for(done.wait(), timeout=600)


async def measure(
    name: str, module: str, base: Settings, *, commands: int, in_flight: int, log_dir: Path
) -> Measurement:
    """Start ``module`` on a namespace of its own, warm it up, measure, clean up."""
    label = f"pcpu-{name}-{uuid.uuid4().hex[:6]}"
    settings = base.with_(namespace=label, database=label.replace("-", "_"))
    log = log_dir / f"{label}.log"
    process = _spawn(module, settings, log)
    try:
        await _ready(process, log)
        await _drive(settings, min(200, commands), in_flight)  # connections, caches, JIT-free
        before, started = cpu_seconds(process.pid), time.monotonic()
        await _drive(settings, commands, in_flight)
        after, wall = cpu_seconds(process.pid), time.monotonic() - started
        if before is None or after is None:
            raise RuntimeError(f"the participant exited; see {log}")
    finally:
        process.terminate()
        process.wait(timeout=30)
        await _clean(settings)
    return Measurement(name=name, commands=commands, cpu_seconds=after - before, wall_seconds=wall)


async def _clean(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        await settings.topology().delete(await connection.channel())
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.mongodb_url)
    await client.drop_database(settings.database)
    await client.close()


async def _run(args: argparse.Namespace, mongodb_url: str, log_dir: Path) -> list[Measurement]:
    base = Settings(
        amqp_url=os.environ.get("AMQP_URL") or DEFAULT_AMQP_URL, mongodb_url=mongodb_url
    )
    names = list(IMPLEMENTATIONS)
    results: list[Measurement] = []
    for run in range(args.runs):
        for name in names if run % 2 == 0 else names[::-1]:
            m = await measure(
                name,
                IMPLEMENTATIONS[name],
                base,
                commands=args.commands,
                in_flight=args.in_flight,
                log_dir=log_dir,
            )
            print(
                f"run {run + 1} {name:>10}: {m.cpu_ms_per_command:.3f} ms CPU/command, "
                f"{m.commands / m.wall_seconds:.0f} commands/s",
                flush=True,
            )
            results.append(m)
    return results


def _report(results: list[Measurement]) -> None:
    by_run: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for m in results:
        by_run[m.name].append(m.cpu_ms_per_command)
    ratios = [f / a for a, f in zip(by_run["aio-pika"], by_run["faststream"], strict=True)]
    print("ratio faststream / aio-pika per run: " + ", ".join(f"{r:.2f}" for r in ratios))
    extra = statistics.median(by_run["faststream"]) - statistics.median(by_run["aio-pika"])
    print(
        f"median ratio {statistics.median(ratios):.2f}; "
        f"faststream adds {1000 * extra:.0f} us of CPU per command"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m orchestrator.dev.bench.participant_cpu``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="participant-cpu-") as tmp:
        folder = Path(tmp)
        mongo: EmbeddedMongo | None = None
        url = os.environ.get("MONGODB_URL")
        if not url:
            mongo = EmbeddedMongo(folder / "mongo")
            url = mongo.start()
        try:
            _report(asyncio.run(_run(args, url, folder)))
        finally:
            if mongo is not None:
                mongo.stop()


if __name__ == "__main__":
    main()
