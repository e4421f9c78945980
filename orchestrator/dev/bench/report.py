"""A benchmark report as a table (terminal or Markdown), JSON, and a PNG plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from orchestrator.dev.bench.results import BenchReport, LevelResult

__all__ = [
    "COLUMNS",
    "comparison_markdown",
    "history_lines",
    "markdown",
    "memory_lines",
    "plot",
    "profile_lines",
    "rows",
    "summary_lines",
    "to_json",
]

COLUMNS = (
    ("concurrency", "in flight"),
    ("rate", "sagas/s"),
    ("p50", "p50 ms"),
    ("p95", "p95 ms"),
    ("p99", "p99 ms"),
    ("baseline_rate", "baseline sagas/s"),
    ("baseline_p50", "baseline p50 ms"),
    ("ratio", "ratio"),
    ("writes", "store writes/saga"),
    ("reads", "store reads/saga"),
    ("cpu_services", "services CPU ms/saga"),
    ("cpu_broker", "broker CPU ms/saga"),
    ("cpu_store", "store CPU ms/saga"),
)


def row(report: BenchReport, level: LevelResult) -> dict[str, float]:
    """The numbers of one concurrency level (baseline columns nan without a baseline)."""
    base = report.baseline_at(level.concurrency)
    return {
        "concurrency": level.concurrency,
        "rate": level.rate,
        "p50": level.latency.p50,
        "p95": level.latency.p95,
        "p99": level.latency.p99,
        "baseline_rate": base.rate if base else math.nan,
        "baseline_p50": base.latency.p50 if base else math.nan,
        "baseline_p95": base.latency.p95 if base else math.nan,
        "baseline_p99": base.latency.p99 if base else math.nan,
        "ratio": report.ratio(level),
        "writes": level.per_saga(level.store.writes()),
        "reads": level.per_saga(level.store.reads()),
        "cpu_services": level.cpu_ms_per_saga(),
        "cpu_broker": level.cpu_ms_per_saga(["broker"]),
        "cpu_store": level.cpu_ms_per_saga(["store"]),
        "cpu_driver": level.cpu_ms_per_saga(["driver"]),
        "baseline_cpu_roles": base.cpu_ms_per_saga() if base else math.nan,
        "baseline_cpu_broker": base.cpu_ms_per_saga(["broker"]) if base else math.nan,
        "other_load_cpus": level.other_load,
    }


def rows(report: BenchReport) -> list[dict[str, float]]:
    """One row per concurrency level of the system."""
    return [row(report, level) for level in report.system]


def _fmt(key: str, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if key == "concurrency":
        return str(int(value))
    if key == "ratio":
        return f"{value:.2f}"
    return f"{value:.1f}"


def table_cells(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of the results table."""
    header = [title for _, title in COLUMNS]
    cells = [[_fmt(key, r[key]) for key, _ in COLUMNS] for r in rows(report)]
    return header, cells


def markdown(report: BenchReport) -> str:
    """The results table and the summary as Markdown."""
    header, cells = table_cells(report)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
        *("| " + " | ".join(c) + " |" for c in cells),
        "",
        *(f"- {line}" for line in summary_lines(report)),
    ]
    return "\n".join(lines) + "\n"


def comparison_markdown(reports: Sequence[BenchReport]) -> str:
    """Several sagas' runs side by side, level by level (e.g. a saga and its parallel
    variant: what the group does to latency)."""
    header = ("saga", "stages", "in flight", "sagas/s", "p50 ms", "p95 ms", "p99 ms",
              "baseline p50 ms", "ratio")  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for report in reports:
        stages = " -> ".join("+".join(stage) for stage in report.saga.get("stages", []))
        for r in rows(report):
            cells = [str(report.saga.get("name")), stages]
            cells += [_fmt(k, r[k]) for k in ("concurrency", "rate", "p50", "p95", "p99")]
            cells += [_fmt("baseline_p50", r["baseline_p50"]), _fmt("ratio", r["ratio"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def summary_lines(report: BenchReport) -> list[str]:
    """The saga, messages and store commands per saga, CPU and memory by process, notes."""
    lines = [_saga_line(report), _messages_line(report, "system")]
    if not math.isnan(report.saga_path_per_saga()):
        lines.append(_saga_path_line(report))
    lines.append(_store_line(report))
    lines.extend(history_lines(report))
    if report.baseline:
        lines.append(_messages_line(report, "baseline"))
    for level in report.system:
        lines.append(_cpu_line(level))
    for level in report.baseline:
        lines.append(_cpu_line(level))
    lines.extend(memory_lines(report))
    lines.extend(profile_lines(report))
    lines.extend(report.notes)
    return lines


def history_lines(report: BenchReport) -> list[str]:
    """With ``--history``: each level's ratio against the one measured in the same run
    before seeding (the growth figure)."""
    lines = []
    sagas = report.history.get("sagas", 0)
    for level in report.system:
        empty = next(
            (r for r in report.empty_store.get("system", []) if r.concurrency == level.concurrency),
            None,
        )
        if empty is None:
            continue
        before, after = report.empty_store_ratio(level.concurrency), report.ratio(level)
        if math.isnan(before) or math.isnan(after) or before == 0:
            change = "change unknown (no baseline)"
        else:
            change = f"change {100 * (after / before - 1):+.1f}%"
        lines.append(
            f"growth at {level.concurrency} in flight: {empty.rate:.1f} sagas/s, ratio "
            f"{_fmt('ratio', before)} before seeding; {level.rate:.1f} sagas/s, ratio "
            f"{_fmt('ratio', after)} with {sagas} finished sagas stored ({change}, "
            f"store writes/saga {empty.per_saga(empty.store.writes()):.1f} -> "
            f"{level.per_saga(level.store.writes()):.1f})"
        )
    return lines


def _saga_line(report: BenchReport) -> str:
    saga = report.saga
    stages = " -> ".join(" + ".join(stage) for stage in saga.get("stages", []))
    options = ", ".join(f"{k}={v}" for k, v in (saga.get("workload") or {}).items())
    return (
        f"saga {saga.get('name')} v{saga.get('version')}: {stages} "
        f"({len(saga.get('steps', []))} steps, {saga.get('messages_per_saga')} messages per "
        f"saga by its definition); services: {', '.join(saga.get('services', []))}; "
        f"workload: {options or 'defaults'}"
    )


def _saga_path_line(report: BenchReport) -> str:
    return (
        f"system: {report.saga_path_per_saga():.2f} saga-path messages per saga as stored "
        f"(start, commands, replies, outcome; {report.expected_messages} by the definition) "
        f"and {report.progress_per_saga():.2f} progress events"
    )


def memory_lines(report: BenchReport) -> list[str]:
    """Resident memory per service: when ready, and at each system level's window edges."""
    lines = []
    started, end = report.memory.get("started", {}), report.memory.get("end", {})
    if started:
        parts = ", ".join(
            f"{name} {mib:.0f}->{end.get(name, math.nan):.0f}"
            for name, mib in sorted(started.items())
        )
        lines.append(f"system memory (RSS MiB), ready -> after the last level: {parts}")
    for level in report.system:
        if level.rss_end:
            parts = ", ".join(
                f"{name} {level.rss_start.get(name, math.nan):.0f}->{mib:.0f}"
                for name, mib in sorted(level.rss_end.items())
            )
            lines.append(
                f"system memory (RSS MiB) at {level.concurrency} in flight, window start -> "
                f"end: {parts}"
            )
    return lines


def profile_lines(report: BenchReport) -> list[str]:
    """Per profiled service and level: busy time by category, as shares and as CPU
    milliseconds per saga (the share of the service's measured CPU per saga)."""
    lines = []
    for key, summary in report.profiles.items():
        service, _, label = key.partition("@")
        level = next((x for x in report.system if f"c{x.concurrency}" == label), None)
        cpu = level.cpu_ms_per_saga([service]) if level else math.nan
        shares = summary.get("busy_share_by_category", {})
        parts = "; ".join(
            f"{name} {share:.0%} ({share * cpu:.2f} ms)" for name, share in shares.items()
        )
        lines.append(f"{service} at {label[1:]} in flight, {cpu:.2f} CPU ms/saga: {parts}")
    return lines


def _messages_line(report: BenchReport, target: str) -> str:
    counted = report.messages.get(target) or {}
    per_saga = report.messages_per_saga(target)
    if math.isnan(per_saga):
        return f"{target}: messages per saga unknown ({counted.get('error', 'not counted')})"
    if not report.messages_counted_by_broker(target):
        return (
            f"{target}: {per_saga:.2f} messages per saga, estimated from what was stored "
            f"(the broker could not be asked: {counted.get('error', '?')})"
        )
    levels = report.system if target == "system" else report.baseline
    batched = report.progress_messages() if target == "system" else None
    if batched is not None and counted.get("publishes") != counted.get("outbox_estimate"):
        progress = counted["outbox_estimate"] - counted["saga_path_estimate"]
        check = (
            f"expected from the store: {counted['saga_path_estimate']} on the saga path and "
            f"{progress} progress events, published in {batched} messages (batched)"
        )
    elif "outbox_estimate" in counted:
        check = f"expected from the store: {counted['outbox_estimate']}"
    else:
        check = f"by construction: {counted.get('by_construction')}"
    return (
        f"{target}: {per_saga:.2f} broker messages per saga ({counted['publishes']} published "
        f"for {sum(r.started for r in levels)} sagas; {check})"
    )


def _store_line(report: BenchReport) -> str:
    sagas = report.sagas_started()
    if not sagas:
        return "store: no sagas"
    ops = report.store_total
    parts = ", ".join(f"{name} {ops.writes(name) / sagas:.2f}" for name in sorted(ops.by_service))
    return (
        f"system: {ops.writes() / sagas:.2f} store writes and {ops.reads() / sagas:.2f} reads "
        f"per saga over the whole run (writes by service: {parts})"
    )


def _cpu_line(level: LevelResult) -> str:
    names = [n for n in sorted(level.cpu) if n != "machine"]
    parts = ", ".join(f"{name} {level.cpu_ms_per_saga([name]):.2f}" for name in names)
    return (
        f"{level.target} at {level.concurrency} in flight: CPU ms per saga: {parts}; "
        f"whole machine {level.cpu_ms_per_saga(['machine']):.2f}"
    )


def to_json(report: BenchReport) -> str:
    """The whole report, with the table rows, as JSON (nan as null)."""
    data: dict[str, Any] = asdict(report)
    data["rows"] = rows(report)
    data["growth"] = [
        {
            "concurrency": level.concurrency,
            "ratio_before_seeding": report.empty_store_ratio(level.concurrency),
            "ratio_with_history": report.ratio(level),
        }
        for level in report.system
        if report.empty_store
    ]
    data["messages_per_saga"] = {
        "system": report.messages_per_saga("system"),
        "baseline": report.messages_per_saga("baseline"),
        "saga_path": report.saga_path_per_saga(),
        "progress": report.progress_per_saga(),
        "by_definition": report.expected_messages,
    }
    return json.dumps(_nan_to_none(data), indent=2, default=str)


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def plot(report: BenchReport, path: Path) -> None:
    """Throughput and latency against concurrency, system beside baseline, as a PNG."""
    import matplotlib as mpl  # noqa: PLC0415 - a dev dependency, only when asked

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    data = rows(report)
    xs = [r["concurrency"] for r in data]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(xs, [r["rate"] for r in data], "o-", label="system")
    if report.baseline:
        left.plot(xs, [r["baseline_rate"] for r in data], "s--", label="raw-broker baseline")
    left.set(xscale="log", xlabel="sagas in flight", ylabel="completed sagas/s")
    left.set_title(f"Throughput: {report.saga.get('name', 'saga')}")
    for key, style in (("p50", "o-"), ("p95", "^-"), ("p99", "v-")):
        right.plot(xs, [r[key] for r in data], style, label=f"system {key}")
    if report.baseline:
        right.plot(xs, [r["baseline_p50"] for r in data], "s--", label="baseline p50")
        right.plot(xs, [r["baseline_p99"] for r in data], "d--", label="baseline p99")
    right.set(xscale="log", yscale="log", xlabel="sagas in flight", ylabel="ms")
    right.set_title("End-to-end latency")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
