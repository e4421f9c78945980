"""The UI's rules over plain HTTP: changes need the operator token (a form field, or the
login cookie with the form's csrf value), reads follow the read rule, and bad input is
explained on a page, never a server error."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import TYPE_CHECKING

import httpx
import pytest

from orchestrator.ui import ReadRule
from tests.browser import serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tests.integration.conftest import System, SystemFactory

pytestmark = pytest.mark.integration

TOKEN = "ui-operator-token"
READER = "ui-read-token"


def closed_reads(app: FastAPI) -> None:
    """Reads need the read token (or the operator's), as the API will have them."""
    app.state.ui.read_rule = lambda _settings: ReadRule(open=False, tokens=(READER,))


@pytest.fixture
async def ui(make_system: SystemFactory) -> AsyncIterator[tuple[System, httpx.AsyncClient]]:
    """A system with an operator token, and an HTTP client on its UI (no redirects
    followed, so the tests see them)."""
    system = await make_system(operator_token=TOKEN)
    async with serve(system.settings) as (url, _app), httpx.AsyncClient(base_url=url) as http:
        yield system, http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "an operator's page carries the csrf value in its forms"
    return found.group(1)


async def log_in(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/ui/login", data={"token": token, "next": "/ui/stuck"})


async def test_changes_need_the_operator_token_as_a_field_or_login_and_csrf(
    ui: tuple[System, httpx.AsyncClient],
) -> None:
    _system, http = ui
    resume = "/ui/sagas/no-such-saga/resume"

    refused = await http.post(resume)
    assert refused.status_code == 401
    assert "log in as operator" in refused.text
    assert (await http.post(resume, data={"token": "wrong"})).status_code == 401
    passed = await http.post(resume, data={"token": TOKEN})
    assert passed.status_code == 404, "past the check: there is no such saga"
    assert "no saga" in passed.text
    assert (await http.get(resume)).status_code == 405, "nothing changes by GET"

    assert (await log_in(http, "wrong")).status_code == 401
    logged_in = await log_in(http, TOKEN)
    assert logged_in.status_code == 303
    assert logged_in.headers["location"] == "/ui/stuck"
    cookie = SimpleCookie(logged_in.headers["set-cookie"])["saga_ui"]
    assert cookie["httponly"]
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/ui"
    assert TOKEN not in cookie.value, "the cookie holds a digest, not the token"

    no_csrf = await http.post(resume)
    assert no_csrf.status_code == 401
    assert "csrf" in no_csrf.text
    assert (await http.post(resume, data={"csrf": "0" * 64})).status_code == 401
    csrf = csrf_of((await http.get("/ui/dead-letters/payment.commands")).text)
    assert (await http.post(resume, data={"csrf": csrf})).status_code == 404

    out = await http.post("/ui/logout")
    assert out.status_code == 303
    http.cookies.clear()
    assert (await http.post(resume, data={"csrf": csrf})).status_code == 401


async def test_a_login_goes_back_only_to_a_page_of_the_ui(
    ui: tuple[System, httpx.AsyncClient],
) -> None:
    _system, http = ui
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui\\..\\x", "/docs"):
        response = await http.post("/ui/login", data={"token": TOKEN, "next": target})
        assert response.headers["location"] == "/ui/sagas", target


async def test_without_an_operator_token_changes_are_disabled(system: System) -> None:
    assert not system.settings.operator_token
    settings = system.settings.with_(extra={**system.settings.extra, "SAGA_READS_OPEN": "true"})
    async with serve(settings) as (url, _app), httpx.AsyncClient(base_url=url) as http:
        refused = await http.post("/ui/sagas/x/resume", data={"token": "anything"})
        assert refused.status_code == 401
        assert "no operator token is configured" in refused.text
        assert (await http.get("/ui/sagas")).status_code == 200, "SAGA_READS_OPEN"
        paths = (await http.get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/ui")], "pages are not API operations"
        assert (await http.get("/ui/static/htmx.min.js")).status_code == 200


async def test_reads_follow_the_read_rule(make_system: SystemFactory) -> None:
    """With reads closed, every page sends a stranger to the login form and comes back;
    a read token reads but cannot change; the operator token does both."""
    system = await make_system(operator_token=TOKEN)
    async with (
        serve(system.settings, adjust=closed_reads) as (url, _app),
        httpx.AsyncClient(base_url=url) as http,
    ):
        for page in ("/ui/sagas?status=running", "/ui/stuck", "/ui/dead-letters", "/ui/sagas/x"):
            response = await http.get(page)
            assert response.status_code == 303, page
            assert response.headers["location"].startswith("/ui/login?next=%2Fui%2F")
        assert (await http.get("/ui/login")).status_code == 200

        back = await http.post("/ui/login", data={"token": READER, "next": "/ui/dead-letters"})
        assert back.headers["location"] == "/ui/dead-letters"
        listed = await http.get("/ui/dead-letters")
        assert listed.status_code == 200
        assert 'name="csrf"' not in listed.text, "a reader's forms ask for the token"
        refused = await http.post("/ui/sagas/x/resume")
        assert refused.status_code == 401

        http.cookies.clear()
        await log_in(http, TOKEN)
        assert (await http.get("/ui/sagas")).status_code == 200
        csrf = csrf_of((await http.get("/ui/dead-letters/payment.commands")).text)
        assert (await http.post("/ui/sagas/x/resume", data={"csrf": csrf})).status_code == 404


async def test_bad_input_is_explained_on_the_page(ui: tuple[System, httpx.AsyncClient]) -> None:
    _system, http = ui
    await log_in(http, TOKEN)
    explained = {
        "/ui/sagas?status=nonsense": "unknown status nonsense",
        "/ui/sagas?age=soon": "is not a duration",
        "/ui/sagas?age=99999d": "more than ten years",
        "/ui/sagas?after=not-a-token": "not a page token",
        "/ui/sagas?step=reserve_stock": "choose the saga too",
        "/ui/sagas?saga=order_fulfilment&step=nope": "has no step &#39;nope&#39;",
        "/ui/stuck?idle=later": "is not a duration",
    }
    for path, words in explained.items():
        response = await http.get(path)
        assert response.status_code == 400, path
        assert words in response.text, path
    too_many = await http.get("/ui/dead-letters/payment.commands?limit=100000")
    assert too_many.status_code == 400
    assert "bad request: limit: Input should be less than or equal to 200" in too_many.text
    missing = await http.get("/ui/sagas/no-such-saga")
    assert missing.status_code == 404
    assert "no saga &#39;no-such-saga&#39;" in missing.text
    unknown = await http.get("/ui/dead-letters/nope")
    assert unknown.status_code == 404
    assert "no dead-letter queue" in unknown.text

    queue = "/ui/dead-letters/payment.commands"
    nothing = await http.post(f"{queue}/replay", data={"token": TOKEN})
    assert nothing.status_code == 400
    assert "select the messages" in nothing.text
    no_reason = await http.post(
        f"{queue}/discard", data={"token": TOKEN, "everything": "yes", "confirmed": "yes"}
    )
    assert no_reason.status_code == 400
    assert "a reason is required" in no_reason.text
    dry = await http.post(f"{queue}/discard", data={"token": TOKEN, "everything": "yes"})
    assert dry.status_code == 200
    assert "No message of the 0 in the queue" in dry.text
