"""``saga bench``: the whole system under load, beside a raw-broker baseline.

Starts MongoDB (MONGODB_URL, or the embedded server in a temp folder), the four
services on a fresh namespace and database, and the raw-broker baseline's processes;
keeps N sagas in flight at each concurrency level, the system then the baseline; prints
the table and removes everything it created. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.bench import BenchConfig, BenchReport, Workload, run_bench
from orchestrator.bench.report import markdown, plot, summary_lines, table_cells, to_json
from orchestrator.devrun import ensure_rabbitmq
from orchestrator.settings import Settings

__all__ = ["RichDisplay", "cmd_bench", "register"]


class RichDisplay:
    """A progress bar per phase, on stderr."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<40}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._finish()
        self.progress.stop()

    def phase(self, title: str) -> None:
        """Close the previous bar, open one for ``title``."""
        self._finish()
        self._task = self.progress.add_task(title, total=1.0, status="")

    def update(self, fraction: float, text: str) -> None:
        """Move the current bar."""
        if self._task is not None:
            self.progress.update(self._task, completed=fraction, status=text)

    def _finish(self) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=1.0)


def _concurrencies(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,10,50,200") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("concurrencies must be whole numbers >= 1")
    return values


def config_from(settings: Settings, args: argparse.Namespace) -> BenchConfig:
    """The benchmark configuration the arguments ask for."""
    return BenchConfig(
        concurrency=args.sweep or (args.concurrency,),
        duration=args.duration,
        warmup=args.warmup,
        baseline=not args.no_baseline,
        publish_progress=settings.publish_progress and not args.no_progress,
        read_side=args.read_side,
        profile_dir=args.profile,
        profiler=args.profiler,
        log_dir=args.log_dir,
        workload=Workload(skus=args.skus, lines=args.lines),
        management_url=args.management_url,
    )


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark and report; exit 1 if a level completed no saga."""
    if not await asyncio.to_thread(ensure_rabbitmq, settings.amqp_url):
        return 1
    # MONGODB_URL from the environment only: the dev runner's store (.data/dev.env) is not
    # the benchmark's; without one the benchmark starts its own embedded server.
    settings = settings.with_(mongodb_url=os.environ.get("MONGODB_URL") or None)
    config = config_from(settings, args)
    with RichDisplay(Console(stderr=True)) as display:
        report = await run_bench(settings, config, display)
    _print(report, " ".join(["saga", "bench", *map(shlex.quote, sys.argv[2:])]))
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, to_json(report))
        print(f"JSON written to {args.json}")
    if args.png:
        await asyncio.to_thread(plot, report, Path(args.png))
        print(f"plot written to {args.png}")
    if args.profile:
        print(f"profiles in {args.profile}/ (<service>@c<in flight>)")
    return 0 if report.system and all(level.completed for level in report.system) else 1


def _print(report: BenchReport, command: str) -> None:
    machine = report.machine
    print(
        f"{command}\n{machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB, {machine['rabbitmq']}, {machine['mongodb']}"
    )
    if not sys.stdout.isatty():
        print(markdown(report))
        return
    header, cells = table_cells(report)
    table = Table(*header)
    for cell_row in cells:
        table.add_row(*cell_row)
    console = Console()
    console.print(table)
    for line in summary_lines(report):
        console.print(f"- {line}", highlight=False)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``saga bench``."""
    bench = sub.add_parser(
        "bench",
        help="benchmark the whole system beside a raw-broker baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("--concurrency", type=int, default=50, help="sagas in flight (50)")
    bench.add_argument("--duration", type=float, default=20.0, help="seconds measured per level")
    bench.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    bench.add_argument(
        "--sweep", type=_concurrencies, default=None, metavar="N,N,...",
        help="several concurrencies, e.g. 1,10,50,200 (instead of --concurrency)",
    )  # fmt: skip
    bench.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    bench.add_argument("--png", metavar="FILE", help="plot throughput and latency to a PNG")
    bench.add_argument("--no-baseline", action="store_true", help="skip the raw-broker baseline")
    bench.add_argument(
        "--no-progress", action="store_true",
        help="do not publish read-side progress events (SAGA_PUBLISH_PROGRESS=false)",
    )  # fmt: skip
    bench.add_argument(
        "--read-side", action="store_true",
        help="also run the read side (projections, notifications, analytics)",
    )  # fmt: skip
    bench.add_argument(
        "--profile", type=Path, nargs="?", const=Path("bench-profile"), default=None,
        metavar="DIR", help="profile the services during each measured window; files in DIR",
    )  # fmt: skip
    bench.add_argument(
        "--profiler", choices=("auto", "py-spy", "pyinstrument"), default="auto",
        help="py-spy samples from outside (uv tool install py-spy); pyinstrument runs inside "
        "the services and slows them down; auto: py-spy if installed",
    )  # fmt: skip
    bench.add_argument("--skus", type=int, default=100, help="SKUs the orders draw from")
    bench.add_argument("--lines", type=int, default=1, help="order lines (SKUs) per order")
    bench.add_argument("--log-dir", type=Path, default=None, help="keep the services' logs")
    bench.add_argument("--management-url", default=None, help="default http://<amqp host>:15672/")
    bench.set_defaults(run=cmd_bench)
