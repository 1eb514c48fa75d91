"""Where the browser tests find headless Chromium and ChromeDriver, and why they skip without.

Both are needed: Selenium drives Chromium through ChromeDriver, and Debian ships them as two
packages (``chromium``, ``chromium-driver``). The skip reason names what is missing and how to
install it; ``-rfEs`` in the pytest ``addopts`` (pytest's default ``fE`` plus ``s``) prints it
even under ``-q``.
"""

from __future__ import annotations

import shutil
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
