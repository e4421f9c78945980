"""Who may see and change what in the UI: the API's rules, through a login cookie.

Reads follow the API's read rule (:func:`api_read_rule`, the one place that names it).
Changes need the operator token, in every POST: either as a ``token`` form field, or
through the login cookie plus the form's ``csrf`` field. The cookie holds a digest of the
token, never the token; it is HttpOnly, SameSite=Strict and limited to ``/ui``. The
``csrf`` value is another digest of the operator token, so a page of another site can
neither send the cookie (SameSite) nor forge the field (it cannot compute it). Changes
are never made by GET.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fastapi import Request, status

from orchestrator.api.deps import services

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = [
    "COOKIE",
    "LoginRequired",
    "ReadRule",
    "ReadRuleOf",
    "Refused",
    "Role",
    "Viewer",
    "api_read_rule",
    "identify",
    "reader",
    "require_operator",
    "session_value",
]

COOKIE = "saga_ui"
Role = Literal["operator", "reader"]


@dataclass(frozen=True, kw_only=True)
class ReadRule:
    """Reads are open to anyone, or need one of ``tokens`` (the operator token always
    reads too)."""

    open: bool = True
    tokens: tuple[str, ...] = ()


ReadRuleOf = Callable[["Settings"], ReadRule]


def api_read_rule(settings: Settings) -> ReadRule:
    """The API's read rule for this deployment (``SAGA_READ_TOKEN``, ``SAGA_READS_OPEN``):
    every UI page follows it."""
    from orchestrator.api.deps import Access  # noqa: PLC0415 - the API imports the UI

    access = Access.of(settings)
    tokens = (access.reader.get_secret_value(),) if access.reader else ()
    return ReadRule(open=access.reads_open, tokens=tokens)


@dataclass(frozen=True, kw_only=True)
class Viewer:
    """Who looks at a page: logged in as operator or reader, or nobody."""

    role: Role | None = None
    csrf: str = ""
    """The value an operator's forms carry (empty unless ``role`` is operator)."""

    @property
    def operator(self) -> bool:
        """May this viewer's forms change things (given the csrf field)?"""
        return self.role == "operator"


class LoginRequired(Exception):
    """Reads need a login here; ``next`` is where to come back to."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class Refused(Exception):
    """A change refused; the message says why and what to do."""

    def __init__(self, message: str, *, status_code: int = status.HTTP_401_UNAUTHORIZED):
        super().__init__(message)
        self.status_code = status_code


def _digest(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


def session_value(role: Role, token: str) -> str:
    """The cookie value for a login with ``token`` in ``role``."""
    return f"{role}.{_digest(token, f'saga-ui-session:{role}')}"


def _csrf(operator_token: str) -> str:
    return _digest(operator_token, "saga-ui-csrf")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _operator_token(request: Request) -> str | None:
    return services(request).settings.operator_token or None


def _read_rule(request: Request) -> ReadRule:
    rule_of: ReadRuleOf = request.app.state.ui.read_rule
    return rule_of(services(request).settings)


def identify(request: Request) -> Viewer:
    """The viewer the login cookie names (or nobody)."""
    cookie = request.cookies.get(COOKIE, "")
    operator_token = _operator_token(request)
    if operator_token and _same(cookie, session_value("operator", operator_token)):
        return Viewer(role="operator", csrf=_csrf(operator_token))
    for token in _read_rule(request).tokens:
        if token and _same(cookie, session_value("reader", token)):
            return Viewer(role="reader")
    return Viewer()


def role_of_token(request: Request, token: str) -> Role | None:
    """The role a token given at the login form logs in as, if any."""
    operator_token = _operator_token(request)
    if token and operator_token and _same(token, operator_token):
        return "operator"
    if token and any(t and _same(token, t) for t in _read_rule(request).tokens):
        return "reader"
    return None


def reader(request: Request) -> Viewer:
    """Dependency of every page: the viewer, if the read rule lets them read."""
    viewer = identify(request)
    if viewer.role is None and not _read_rule(request).open:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return viewer


async def require_operator(request: Request) -> Viewer:
    """Dependency of every change: the operator token as a ``token`` form field, or the
    operator's login cookie with the form's ``csrf`` field; else :class:`Refused`."""
    expected = _operator_token(request)
    if not expected:
        raise Refused("changes are disabled: no operator token is configured (SAGA_OPERATOR_TOKEN)")
    form = await request.form()
    given = form.get("token")
    if isinstance(given, str) and given and _same(given, expected):
        return Viewer(role="operator", csrf=_csrf(expected))
    viewer = identify(request)
    csrf = form.get("csrf")
    if viewer.operator and isinstance(csrf, str) and _same(csrf, viewer.csrf):
        return viewer
    if viewer.operator:
        raise Refused("the form is stale or not from this UI (csrf check failed): reload the page")
    raise Refused("changes need the operator token: log in as operator first")
