"""The test suite's own set-up: a skipped browser test says why, even under ``pytest -q``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from browser_fixtures import missing_browser

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_missing_chromedriver_alone_is_reason_enough(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    driver = tmp_path / "chromedriver"
    reason = missing_browser(chromium, driver)
    assert reason is not None and str(driver) in reason and str(chromium) not in reason
    assert "apt-get install chromium chromium-driver" in reason
    both = missing_browser(tmp_path / "no-chromium", driver)
    assert str(tmp_path / "no-chromium") in both and str(driver) in both
    driver.write_text("#!/bin/sh\n")
    assert missing_browser(chromium, driver) is None


def test_quiet_run_prints_the_skip_reason(tmp_path):
    """With the project's pytest configuration, ``-q`` lists each skip with its reason."""
    test = tmp_path / "test_needs_a_browser.py"
    test.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS / 'support')!r})
        from browser_fixtures import browser_marks
        pytestmark = browser_marks("/nonexistent/chromium", "/nonexistent/chromedriver")

        def test_page():
            raise AssertionError("must not run")
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path), str(test)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [ln for ln in proc.stdout.splitlines() if ln.startswith("SKIPPED")]
    assert len(skipped) == 1, proc.stdout
    assert "/nonexistent/chromedriver" in skipped[0] and "chromium-driver" in skipped[0]
    assert "1 skipped" in proc.stdout
