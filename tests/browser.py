"""A real headless Chromium for the UI tests (Debian's chromium and chromium-driver,
driven by selenium), and the API with its UI served by uvicorn in the test's loop.

Selenium blocks, and the server runs in the test's event loop: every browser call runs
in a thread (``asyncio.to_thread``), so the loop keeps serving the pages it asks for.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn

from orchestrator.api import create_app
from orchestrator.dev.embedded import free_port
from tests.helpers import eventually

if TYPE_CHECKING:
    from fastapi import FastAPI
    from selenium.webdriver.remote.webdriver import WebDriver

    from orchestrator.settings import Settings

T = TypeVar("T")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1360,1000",
)
SCREENSHOTS = os.environ.get("SAGA_UI_SCREENSHOTS")
"""Set to a folder (``docs/ui``) to keep the screenshots the tests take there."""


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) executables, or None if they are not installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start_chromium(user_data: Path) -> WebDriver:
    """A fresh headless Chromium with its own profile folder."""
    from selenium import webdriver  # noqa: PLC0415 - only the browser tests need it
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    found = find_chromium()
    assert found is not None
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data}")
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


@asynccontextmanager
async def serve(
    settings: Settings, *, adjust: Callable[[FastAPI], None] | None = None
) -> AsyncIterator[tuple[str, FastAPI]]:
    """The API and its UI served by uvicorn on a free port: (base URL, app)."""
    app = create_app(settings)
    if adjust is not None:
        adjust(app)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), what="API started")
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await serving


class Browser:
    """Chromium on one base URL; every call runs off the event loop."""

    def __init__(self, driver: WebDriver, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(call, *args)

    async def open(self, path: str) -> None:
        """Load a page (returns when it has loaded)."""
        await self._run(self.driver.get, self.base_url + path)

    async def click(self, css: str) -> None:
        """Click the first element matching ``css`` (a link or a submit button)."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        def click() -> None:
            self.driver.find_element(By.CSS_SELECTOR, css).click()

        await self._run(click)

    async def fill(self, css: str, text: str) -> None:
        """Type ``text`` into the field matching ``css`` (after clearing it)."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        def fill() -> None:
            field = self.driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(text)

        await self._run(fill)

    async def select(self, css: str, value: str) -> None:
        """Choose the option with ``value`` in the select matching ``css``."""
        from selenium.webdriver.common.by import By  # noqa: PLC0415
        from selenium.webdriver.support.ui import Select  # noqa: PLC0415

        def select() -> None:
            Select(self.driver.find_element(By.CSS_SELECTOR, css)).select_by_value(value)

        await self._run(select)

    async def texts(self, css: str) -> list[str]:
        """The visible text of every element matching ``css`` (none: an empty list)."""
        from selenium.common.exceptions import WebDriverException  # noqa: PLC0415
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        def texts() -> list[str]:
            try:
                return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, css)]
            except WebDriverException:  # the page changed under us (htmx swap, navigation)
                return []

        return await self._run(texts)

    async def attributes(self, css: str, name: str) -> list[str]:
        """Attribute ``name`` of every element matching ``css``."""
        from selenium.common.exceptions import WebDriverException  # noqa: PLC0415
        from selenium.webdriver.common.by import By  # noqa: PLC0415

        def attributes() -> list[str]:
            try:
                found = self.driver.find_elements(By.CSS_SELECTOR, css)
                return [e.get_attribute(name) or "" for e in found]
            except WebDriverException:  # the page changed under us (htmx swap, navigation)
                return []

        return await self._run(attributes)

    async def text(self, css: str) -> str:
        """All the text of the elements matching ``css``, joined by newlines."""
        return "\n".join(await self.texts(css))

    async def wait_for(self, css: str, contains: str, *, timeout: float = 30.0) -> str:
        """Wait until an element matching ``css`` contains ``contains``; its text."""
        # Never call the driver on the loop: while a page loads, it waits for this server.
        url = await self.url()
        return await eventually(
            lambda: self.text(css),
            until=lambda t: contains in t,
            timeout=timeout,
            what=f"{css!r} showing {contains!r} on {url}",
        )

    async def url(self) -> str:
        """The address of the page shown."""
        return await self._run(lambda: str(self.driver.current_url))

    async def alert_shown(self) -> bool:
        """Whether a JavaScript alert is open (a script of a message ran)."""
        from selenium.common.exceptions import NoAlertPresentException  # noqa: PLC0415

        def probe() -> bool:
            try:
                self.driver.switch_to.alert  # noqa: B018 - the property raises if none
            except NoAlertPresentException:
                return False
            return True

        return await self._run(probe)

    async def screenshot(self, name: str, folder: Path) -> Path:
        """Save a PNG of the page as ``name`` (in SAGA_UI_SCREENSHOTS if set)."""
        target = Path(SCREENSHOTS) if SCREENSHOTS else folder
        target.mkdir(parents=True, exist_ok=True)
        path = target / name
        await self._run(self._full_page_png, path)
        return path

    def _full_page_png(self, path: Path) -> None:
        height = self.driver.execute_script("return document.body.scrollHeight")
        self.driver.set_window_size(1360, min(max(int(height) + 140, 600), 2400))
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1360, 1000)

    async def forget(self) -> None:
        """Drop every cookie (a login of an earlier test: cookies ignore the port)."""
        await self.open("/ui/login")
        await self._run(self.driver.delete_all_cookies)

    async def log_in(self, token: str) -> None:
        """Log in through the login form."""
        await self.open("/ui/login")
        await self.fill("#token", token)
        await self.click("#login")
        await self.wait_for("#who", "operator")


@asynccontextmanager
async def chromium() -> AsyncIterator[WebDriver]:
    """A headless Chromium, quit at the end."""
    profile = Path(tempfile.mkdtemp(prefix="saga-ui-chromium-"))
    driver = await asyncio.to_thread(start_chromium, profile)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
