"""``saga bench``: the whole system under load, beside a raw-broker baseline.

Runs one registered saga (--saga; default the first pack's with a workload): starts
MongoDB (MONGODB_URL, or the embedded server in a temp folder), the orchestrator and
the saga's participants on a fresh namespace and database, seeded by the saga pack's
workload, and the raw-broker baseline's processes, which send the saga's messages (two
per step plus the start and the outcome); keeps N sagas in flight at each concurrency
level, the system then the baseline; prints the table and removes everything it
created. See docs/benchmarks.md.

Workload options (--workload-option KEY=VALUE, repeatable):
  order_fulfilment, order_fulfilment_parallel: skus=100 lines=1 (--skus, --lines)
  order_return: skus=50 lines=1 templates=50 rate=300 (orders placed for real, then
    cloned before each level for up to `rate` returns per second)
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

from orchestrator.dev.bench import BenchConfig, BenchReport, run_bench
from orchestrator.dev.bench.report import (
    comparison_markdown,
    markdown,
    plot,
    summary_lines,
    table_cells,
    to_json,
)
from orchestrator.dev.bench.workloads import WorkloadError, resolve
from orchestrator.dev.devrun import ensure_rabbitmq
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


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. skus=100")
    return key.strip(), value.strip()


def workload_options(args: argparse.Namespace) -> dict[str, str]:
    """``--workload-option`` pairs, with ``--skus`` and ``--lines`` as shortcuts."""
    options = dict(args.workload_option or [])
    for key in ("skus", "lines"):
        if getattr(args, key) is not None:
            options[key] = str(getattr(args, key))
    return options


def config_from(
    settings: Settings, args: argparse.Namespace, saga: str | None = None
) -> BenchConfig:
    """The benchmark configuration the arguments ask for (of one of the sagas asked)."""
    return BenchConfig(
        saga=saga,
        workload_options=workload_options(args),
        concurrency=args.sweep or (args.concurrency,),
        duration=args.duration,
        warmup=args.warmup,
        baseline=not args.no_baseline,
        publish_progress=settings.publish_progress and not args.no_progress,
        read_side=args.read_side,
        profile_dir=args.profile,
        profiler=args.profiler,
        log_dir=args.log_dir,
        management_url=args.management_url,
        history=args.history,
    )


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark of each saga asked and report; exit 1 if a level completed no
    saga, 2 if a saga cannot be benchmarked."""
    if not await asyncio.to_thread(ensure_rabbitmq, settings.amqp_url):
        return 1
    # MONGODB_URL from the environment only: the dev runner's store (.data/dev.env) is not
    # the benchmark's; without one the benchmark starts its own embedded server.
    settings = settings.with_(mongodb_url=os.environ.get("MONGODB_URL") or None)
    sagas: list[str | None] = list(dict.fromkeys(args.saga or [None]))
    try:  # every saga checked before the first runs
        for saga in sagas:
            resolve(settings, saga, workload_options(args), read_side=args.read_side)
    except WorkloadError as e:
        print(f"saga bench: {e}", file=sys.stderr)
        return 2
    command = " ".join(["saga", "bench", *map(shlex.quote, sys.argv[2:])])
    reports = []
    for saga in sagas:
        with RichDisplay(Console(stderr=True)) as display:
            report = await run_bench(settings, config_from(settings, args, saga), display)
        _print(report, command)
        await _write(report, args, suffix=f"-{report.saga['name']}" if len(sagas) > 1 else "")
        reports.append(report)
    if len(reports) > 1:
        print(comparison_markdown(reports))
    return 0 if all(r.system and all(level.completed for level in r.system) for r in reports) else 1


async def _write(report: BenchReport, args: argparse.Namespace, *, suffix: str) -> None:
    """The JSON and PNG files asked for (``bench-<saga>.json`` when several sagas ran)."""
    if args.json:
        path = Path(args.json)
        path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
        await asyncio.to_thread(path.write_text, to_json(report))
        print(f"JSON written to {path}")
    if args.png:
        path = Path(args.png)
        path = path.with_name(f"{path.stem}{suffix}{path.suffix}")
        await asyncio.to_thread(plot, report, path)
        print(f"plot written to {path}")
    if args.profile:
        print(f"profiles in {args.profile}/ (<service>@c<in flight>)")


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
    bench.add_argument(
        "--saga", action="append", default=None, metavar="NAME",
        help="the registered saga to run (default: the first registered pack's with a "
        "workload, order_fulfilment; also order_fulfilment_parallel, order_return); "
        "repeated: each runs in turn, then a table compares them",
    )  # fmt: skip
    bench.add_argument(
        "--workload-option", type=_option, action="append", metavar="KEY=VALUE",
        help="an option of the saga's workload (repeatable; see above)",
    )  # fmt: skip
    bench.add_argument("--skus", type=int, default=None, help="same as --workload-option skus=N")
    bench.add_argument("--lines", type=int, default=None, help="same as --workload-option lines=N")
    bench.add_argument("--log-dir", type=Path, default=None, help="keep the services' logs")
    bench.add_argument(
        "--history", type=int, default=0, metavar="N",
        help="measure on the empty store, seed N finished sagas (clones of real ones), "
        "then measure again: the growth figure, in one run",
    )  # fmt: skip
    bench.add_argument("--management-url", default=None, help="default http://<amqp host>:15672/")
    bench.set_defaults(run=cmd_bench)
