"""Templates and the small formatting helpers they use."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi.templating import Jinja2Templates

from orchestrator.ops.stuck import humanize

if TYPE_CHECKING:
    from fastapi import Request
    from starlette.responses import Response

    from orchestrator.ui.auth import Viewer

__all__ = ["NOTICES", "PREFIX", "TEMPLATES", "clip", "page", "parse_duration", "pretty"]

PREFIX = "/ui"
HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
NOTICES = {
    "resumed": "Resumed: its compensation was sent again.",
    "logged_in": "Logged in.",
    "logged_out": "Logged out.",
}
"""Messages a redirect may ask a page to show (by key, so a link cannot inject text)."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``10m``, ``2h``, ``3d`` as a duration; ValueError with the reason."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text[:40]!r} is not a duration: write 90s, 10m, 2h or 3d")
    value = timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    if value > MAX_DURATION:
        raise ValueError(f"{text[:40]!r} is more than ten years")
    return value


def when(value: Any) -> str:
    """A stored time, in UTC to the millisecond."""
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def ago(value: Any, now: datetime | None = None) -> str:
    """How long ago (or, for a future time, "in ...")."""
    if not isinstance(value, datetime):
        return ""
    delta = (now or datetime.now(UTC)) - value
    if delta < timedelta(0):
        return f"in {humanize(-delta)}"
    return f"{humanize(delta)} ago"


def pretty(value: Any) -> str:
    """Indented JSON for reading (anything not JSON shown as text)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def clip(text: Any, limit: int = 120) -> str:
    """At most ``limit`` characters, with an ellipsis when cut."""
    shown = "" if text is None else str(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


TEMPLATES.env.filters.update(when=when, ago=ago, pretty=pretty, clip=clip)
TEMPLATES.env.globals["prefix"] = PREFIX


def page(
    request: Request,
    template: str,
    viewer: Viewer,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """Render a full page (htmx requests select their part of it themselves)."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"viewer": viewer, "notice": notice, "now": datetime.now(UTC), **context},
        status_code=status_code,
    )
