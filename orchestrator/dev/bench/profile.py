"""Where a service's time goes, from a py-spy or pyinstrument profile of its window.

A sample's time belongs to its innermost Python frame, whose file says who spent it: the
broker client, the store client, serialization, logging, asyncio, or this project's
code. C code is charged to the Python frame that called it (``json.dumps`` to its
caller, BSON encoding to pymongo, a pydantic validator to pydantic). Socket sends get
their own line: on loopback the kernel delivers the data to the peer inside the
sender's ``send``, and on a saturated machine the scheduler often switches to the woken
peer right there, so sampled time piles up on these frames. Samples whose innermost
frame is the event loop's ``run`` are the loop itself: waiting for I/O, or for a CPU
when the machine is saturated, plus uvloop's own C work (polling, socket reads).

Two sources, one summary: py-spy's ``--format raw`` (collapsed stacks with counts, taken
from outside the process, almost free) and pyinstrument sessions (in-process, slower).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CATEGORIES", "category_of", "summarize"]

Frame = tuple[str, str]
"""(function, file path) of one stack frame."""

IDLE = "event loop (waiting for I/O or a CPU; uvloop C)"
OURS = "our code (orchestrator, participants, contracts)"
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("broker client: aio-pika, aiormq, pamqp", ("/aio_pika/", "/aiormq/", "/pamqp/")),
    ("store client: pymongo, bson", ("/pymongo/", "/bson/")),
    ("serialization (pydantic, json)", ("/pydantic/", "/pydantic_core/", "/json/")),
    ("logging (structlog)", ("/structlog/", "/logging/")),
    ("asyncio machinery", ("/asyncio/", "/uvloop/", "/contextlib.py", "/contextvars")),
    ("profiler and benchmark probe", ("/pyinstrument/", "/orchestrator/bench/")),
    (OURS, ("/orchestrator/", "/participants/", "/contracts/")),
)
OTHER = "other (stdlib: uuid, datetime, dataclasses, ...)"
SENDS = "(kernel TCP send; includes waiting for a CPU after it)"
_SOCKET_WRITERS = (
    # aiormq writes through an asyncio StreamWriter; pymongo through its own protocol.
    ("write", "/asyncio/streams.py", f"broker client: socket sends {SENDS}"),
    ("write", "/pymongo/network_layer.py", f"store client: socket sends {SENDS}"),
)
PROBE_THREAD = "keep_writing"
"""The probe's counter-writing thread: not the service's work, left out of summaries."""
_PY_SPY_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>[^()]*?)(?::\d+)?\)$")


def category_of(function: str, path: str) -> str:
    """The category a frame's self time belongs to."""
    path = path if path.startswith("/") else "/" + path
    short = function.rsplit(".", 1)[-1]
    if short == "run" and path.endswith(("asyncio/runners.py", "uvloop/__init__.py")):
        return IDLE
    for writer, file, sends in _SOCKET_WRITERS:
        if short == writer and path.endswith(file):
            return sends
    for category, markers in CATEGORIES:
        if any(marker in path for marker in markers):
            return category
    return OTHER


def _short(path: str) -> str:
    for marker in ("site-packages/", "/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def py_spy_samples(path: Path, *, rate: float) -> Iterator[tuple[list[Frame], float]]:
    """Stacks and seconds from ``py-spy record --format raw`` (``a;b;c count`` lines)."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            match = _PY_SPY_FRAME.match(frame)
            frames.append((match["function"], match["path"]) if match else (frame, ""))
        yield frames, int(count) / rate


def pyinstrument_samples(path: Path) -> Iterator[tuple[list[Frame], float]]:
    """Stacks and seconds from a saved pyinstrument session."""
    from pyinstrument.session import Session  # noqa: PLC0415 - a dev dependency

    for stack, seconds in Session.load(str(path)).frame_records:
        frames = []
        for info in stack:
            parts = info.split("\x01", 1)[0].split("\x00")
            frames.append((parts[0], parts[1] if len(parts) > 1 else ""))
        yield frames, seconds


def summarize(samples: Iterator[tuple[list[Frame], float]], *, top: int = 15) -> dict[str, Any]:
    """Seconds by category (self time), each category's share of the busy (not event
    loop) time, the functions with the most self time, and this project's functions
    with the most inclusive time."""
    by_category: dict[str, float] = defaultdict(float)
    by_leaf: dict[str, float] = defaultdict(float)
    ours_inclusive: dict[str, float] = defaultdict(float)
    for stack, seconds in samples:
        if any(PROBE_THREAD in f for f, _ in stack):
            continue
        function, path = stack[-1]
        category = category_of(function, path)
        by_category[category] += seconds
        if category != IDLE:
            by_leaf[f"{function} ({_short(path)})"] += seconds
        for f, p in {frame for frame in stack if category_of(*frame) == OURS}:
            ours_inclusive[f"{f} ({_short(p)})"] += seconds
    busy = sum(t for c, t in by_category.items() if c != IDLE)
    categories = _largest(by_category, len(by_category))
    return {
        "sampled_seconds": sum(by_category.values()),
        "busy_seconds": busy,
        "seconds_by_category": dict(categories),
        "busy_share_by_category": {c: t / busy for c, t in categories if c != IDLE and busy},
        "top_self": _largest(by_leaf, top),
        "top_ours_inclusive": _largest(ours_inclusive, top),
    }


def _largest(seconds: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(seconds.items(), key=lambda kv: kv[1], reverse=True)[:n]
