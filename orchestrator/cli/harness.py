"""``saga harness list | run``: the failure-scenario catalogue, each scenario on its own
fresh system (namespace ``harness-<scenario>-<hex>``, its own database, its own service
processes with fault injection enabled), removed afterwards.

RabbitMQ is AMQP_URL (a stopped local server is started). MongoDB is MONGODB_URL if set,
else an embedded server in a temporary folder for the run. The exit code is 0 only if
every scenario that ran passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from orchestrator.dev.devrun import ensure_rabbitmq
from orchestrator.dev.harness import catalogue, harness_env, run_catalogue
from orchestrator.dev.harness.report import ALL_CHECKS

if TYPE_CHECKING:
    from orchestrator.dev.harness import CatalogueReport, Scenario, ScenarioReport
    from orchestrator.settings import Settings

__all__ = ["register", "render_report", "render_scenario"]

STYLE = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "bold yellow"}
LISTED_VIOLATIONS = 10


async def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print the catalogue."""
    del args
    table = Table(title="failure scenarios", title_justify="left")
    table.add_column("scenario", style="bold")
    table.add_column("sagas", justify="right")
    table.add_column("what happens")
    for s in catalogue(settings.packs()):
        needs = f"  (needs {', '.join(s.needs)})" if s.needs else ""
        table.add_row(s.name, str(s.sagas), s.summary + needs)
    Console().print(table)
    print("run one:  saga harness run <scenario>      run all:  saga harness run --all")
    return 0


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Run the chosen scenarios and report; 1 if any failed, 2 for bad arguments."""
    known = {s.name: s for s in catalogue(settings.packs())}
    unknown = [n for n in args.names if n not in known]
    if unknown or bool(args.names) == args.all:
        problem = f"unknown scenario {', '.join(unknown)}" if unknown else "name scenarios or --all"
        print(f"{problem}; one of: {', '.join(known)}", file=sys.stderr)
        return 2
    if args.sagas is not None and args.sagas < 4:
        print("--sagas must be at least 4", file=sys.stderr)
        return 2
    chosen = list(known.values()) if args.all else [known[n] for n in args.names]
    for noisy in ("aio_pika", "aiormq"):  # the broker-restart scenario drops connections
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    to_stdout = args.json == "-"
    console = Console(stderr=to_stdout, width=None if sys.stdout.isatty() else 120)
    with contextlib.redirect_stdout(sys.stderr if to_stdout else sys.stdout):
        if not ensure_rabbitmq(settings.amqp_url):
            return 1
    workdir = Path(tempfile.mkdtemp(prefix="saga-harness-"))

    def starting(scenario: Scenario) -> None:
        console.print(f"[bold]▶ {scenario.name}[/]  {scenario.summary}")

    async with harness_env(
        amqp_url=settings.amqp_url, workdir=workdir, mongodb_url=os.environ.get("MONGODB_URL")
    ) as env:
        report = await run_catalogue(
            chosen,
            env,
            sagas=args.sagas,
            on_start=starting,
            on_report=lambda r: render_scenario(console, r),
        )
    render_report(console, report)
    if args.json:
        text = json.dumps(report.to_dict(), indent=2, default=str)
        if to_stdout:
            print(text)
        else:
            await asyncio.to_thread(Path(args.json).write_text, text + "\n")
            console.print(f"JSON report written to {args.json}")
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        console.print(f"service logs kept in {workdir}")
    return 0 if report.ok else 1


def render_scenario(console: Console, r: ScenarioReport) -> None:
    """One scenario's result, as it finishes."""
    style = STYLE[r.status]
    console.print(
        f"  [{style}]{r.status}[/]  {r.scenario}: {r.sagas} sagas in {r.duration_s:.1f} s"
    )
    if r.skipped:
        console.print(f"        skipped: {r.skipped}")
        return
    rows = {
        "outcomes": _pairs(r.outcomes),
        "invariants": "  ".join(
            f"{c.replace('_', ' ')} {'[green]✓[/]' if ok else '[red]✗[/]'}"
            for c, ok in r.checks.items()
        ),
        "injected": _pairs(r.faults),
        "evidence": _pairs({k: v for k, v in r.evidence.items() if v}),
        "dead letters": "; ".join(f"{q}: {_pairs(c)}" for q, c in r.dead_letters.items()),
    }
    for label, text in rows.items():
        console.print(f"        {label:<12} {text or '-'}", highlight=False)
    for note in r.notes:
        console.print(f"        note         {note}", highlight=False)
    for v in r.violations[:LISTED_VIOLATIONS]:
        console.print(f"        [red]✗[/] {v}", highlight=False)
    if len(r.violations) > LISTED_VIOLATIONS:
        console.print(f"        ... and {len(r.violations) - LISTED_VIOLATIONS} more")
    if not r.ok and r.logs:
        console.print(f"        logs         {r.logs}")


def render_report(console: Console, report: CatalogueReport) -> None:
    """The summary table of a run."""
    table = Table(title="harness report", title_justify="left")
    for column in ("scenario", "sagas", "outcomes", "invariants", "injected", "time", "result"):
        table.add_column(column, justify="right" if column in ("sagas", "time") else "left")
    for r in report.scenarios:
        failed = [c for c in ALL_CHECKS if not r.checks.get(c, True)]
        checks = (
            "-" if r.skipped else ("all hold" if not failed else "failed: " + ", ".join(failed))
        )
        table.add_row(
            r.scenario,
            str(r.sagas),
            _pairs(r.outcomes) or "-",
            checks,
            _pairs(r.faults) or "-",
            f"{r.duration_s:.1f} s",
            f"[{STYLE[r.status]}]{r.status}[/]",
        )
    console.print(table)
    counts = report.to_dict()
    verdict = "[bold green]all passed[/]" if report.ok else "[bold red]violations found[/]"
    console.print(
        f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
        f"in {report.duration_s:.1f} s: {verdict}"
    )


def _pairs(counts: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in counts.items())


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``harness list`` and ``harness run``."""
    harness = sub.add_parser(
        "harness",
        help="failure scenarios, each on a fresh system of its own",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = harness.add_subparsers(dest="harness_action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the scenarios")
    listing.set_defaults(run=cmd_list)
    run = actions.add_parser("run", help="run scenarios and check the invariants")
    run.add_argument("names", nargs="*", metavar="SCENARIO", help="scenarios to run")
    run.add_argument("--all", action="store_true", help="run the whole catalogue")
    run.add_argument(
        "--sagas", type=int, default=None, help="sagas per scenario (default: its own)"
    )
    run.add_argument(
        "--json", metavar="FILE", default=None, help="also write a JSON report ('-': stdout)"
    )
    run.set_defaults(run=cmd_run)
