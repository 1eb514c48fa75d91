"""Headless Chromium for the browser tests: where it and ChromeDriver are, the marks that skip
without them (naming what is missing), and a driver (the ``driver`` fixture in conftest.py uses
:func:`chromium`).

    from browser_fixtures import BROWSER_MARKS
    pytestmark = BROWSER_MARKS

    def test_page(driver):
        driver.get("file:///...")

Both programs are needed: Selenium drives Chromium through ChromeDriver, and Debian ships them as
two packages (``chromium``, ``chromium-driver``). ``-rfEs`` in the pytest ``addopts`` prints the
skip reason even under ``-q``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
CHROMEDRIVER = Path(shutil.which("chromedriver") or "/usr/bin/chromedriver")


def missing_browser(chromium: str | Path = CHROMIUM,
                    chromedriver: str | Path = CHROMEDRIVER) -> str | None:
    """Why the browser tests cannot run here, or None when both programs are present."""
    missing = [str(p) for p in (Path(chromium), Path(chromedriver)) if not Path(p).is_file()]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not found: the browser tests need headless Chromium and "
            "ChromeDriver (apt-get install chromium chromium-driver)")


def browser_marks(chromium: str | Path = CHROMIUM,
                  chromedriver: str | Path = CHROMEDRIVER) -> list[pytest.MarkDecorator]:
    """``pytestmark`` for a module of browser tests: the ``browser`` marker and the skip."""
    reason = missing_browser(chromium, chromedriver)
    return [pytest.mark.browser, pytest.mark.skipif(reason is not None, reason=reason or "")]


BROWSER_MARKS = browser_marks()


@contextlib.contextmanager
def chromium(window_size: str = "800,1000") -> Iterator:
    """A headless Chromium WebDriver with a fresh profile and no background networking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="cage-eval-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 f"--user-data-dir={profile}", f"--window-size={window_size}"):
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
