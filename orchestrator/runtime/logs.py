"""structlog set up once per service: JSON lines, or readable console lines.

The standard library's loggers (aio-pika, aiormq, pymongo, uvicorn, asyncio, faststream)
go through the same processors and renderer, so every line a service writes is one JSON
object with the service name, the level, the logger's name and the bound saga context.
"""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["STDLIB_LEVELS", "configure_logging", "route_stdlib_logging"]

STDLIB_LEVELS = {
    "aio_pika": logging.WARNING,
    "aiormq": logging.WARNING,
    "pymongo": logging.WARNING,
    "asyncio": logging.WARNING,
    "faststream": logging.WARNING,
    "uvicorn": logging.INFO,
    "uvicorn.error": logging.INFO,
    "uvicorn.access": logging.INFO,
}
"""What each library logs at least (the root logger: warnings)."""


def configure_logging(service: str, *, fmt: str = "json", level: int = logging.INFO) -> None:
    """Log to stderr with the service name, time and any bound saga context; route the
    standard library's loggers through the same renderer."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    route_stdlib_logging(renderer, shared)


def route_stdlib_logging(
    renderer: structlog.typing.Processor, shared: list[structlog.typing.Processor]
) -> None:
    """One root handler on stderr that renders records as structlog renders events."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name, floor in STDLIB_LEVELS.items():
        library = logging.getLogger(name)
        library.setLevel(floor)
        library.handlers.clear()  # e.g. uvicorn's own: their records reach the root
        library.propagate = True
