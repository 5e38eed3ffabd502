"""The admin panel open in Debian's chromium (headless, driven by Playwright), for tests that
use it beside their own cluster; yields the page and the page's errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 60_000


@contextmanager
def panel_page(url: str) -> Iterator[tuple[Page, list[str]]]:
    """A page on ``url`` with a generous timeout, and the errors it raises."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test.sh does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(url)
            yield page, errors
        finally:
            browser.close()
