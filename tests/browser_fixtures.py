"""Headless Chromium for the browser tests: where it is, the marks that skip without it, and a
driver (the ``driver`` fixture in conftest.py uses :func:`chromium`).

    from browser_fixtures import BROWSER_MARKS
    pytestmark = BROWSER_MARKS

    def test_page(driver):
        driver.get("file:///...")
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (headless "
                       "Chromium is needed for the browser tests)"),
]


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
