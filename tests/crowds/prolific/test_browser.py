"""A Prolific participant in real headless Chromium: arrive with the three parameters, answer the
HITs on Turkle's pages, come back mid-way (resumed, nothing duplicated), land on Prolific's
completion page with the study's code; a visit without parameters is refused with a clear page."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")
pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from browser_fixtures import browser_marks, chromium  # noqa: E402
from prolific_fixtures import prolific_study  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from crowds.prolific import backend  # noqa: E402

pytestmark = [*browser_marks(), pytest.mark.slow]
#: Screenshots land here when CAGE_EVAL_SCREENSHOTS names a directory (else in tmp_path).
SHOTS_ENV = "CAGE_EVAL_SCREENSHOTS"


def _shots(tmp_path: Path) -> Path:
    import os

    out = Path(os.environ.get(SHOTS_ENV) or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _answer_one(browser, wait, choice: str) -> str:
    """Answer the task on screen; the item id shown."""
    first_page = browser.current_url
    frame = wait.until(lambda d: d.find_element(By.ID, "task_assignment_iframe"))
    browser.switch_to.frame(frame)
    wait.until(lambda d: d.execute_script(
        "return Array.from(document.images).length == 2 && "
        "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"))
    item_id = browser.find_element(By.ID, "item_id").get_attribute("value")
    time.sleep(0.2)
    browser.find_element(By.CSS_SELECTOR, f"label[for=choice-{choice}]").click()
    browser.find_element(By.ID, "submitButton").click()
    browser.switch_to.default_content()
    wait.until(lambda d: d.current_url != first_page)
    return item_id


def test_a_participant_does_the_study_in_chromium(tmp_path):
    shots = _shots(tmp_path)
    with prolific_study(tmp_path, tasks_per_participant=3) as s, \
            chromium(window_size="1000,1100") as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(f"{s.turkle_url}/prolific/start/")
        assert browser.find_element(By.ID, "title").text == \
            "This page can only be opened from Prolific"
        assert "Nothing was recorded." in browser.page_source
        browser.save_screenshot(str(shots / "prolific_refused.png"))

        pid = "5f0cc0000000000000000001"
        session_id = s.standin.add_submission(s.study_id, pid)
        browser.get(s.start_url(pid, session_id))
        wait.until(lambda d: "/assignment/" in d.current_url)
        browser.save_screenshot(str(shots / "prolific_task.png"))
        seen = [_answer_one(browser, wait, "top")]
        wait.until(lambda d: "/assignment/" in d.current_url)
        second = browser.current_url

        browser.get(s.start_url(pid, session_id))  # closed the tab, came back from Prolific
        wait.until(lambda d: "/assignment/" in d.current_url)
        assert browser.current_url == second  # resumed, not a new assignment
        seen.append(_answer_one(browser, wait, "bottom"))
        seen.append(_answer_one(browser, wait, "top"))
        wait.until(lambda d: "/submissions/complete" in d.current_url)
        assert browser.current_url == f"{s.standin.completion_page}?cc={s.code}"
        assert f"completed with code {s.code}" in browser.find_element(By.ID, "done").text
        browser.save_screenshot(str(shots / "prolific_completed.png"))

        browser.get(s.start_url(pid, session_id))  # a third visit: nothing more to do
        wait.until(lambda d: "/submissions/complete" in d.current_url)
        s.standin.set_status(session_id, "AWAITING REVIEW", s.code)
        result = backend.collect(s.run, s.api, s.host)
        (session,) = s.host.sessions(s.study_id)
    assert len(set(seen)) == 3 and result.rows == 3
    assert session["visits"] == 3 and session["answered"] == 3 and session["completed_at"]
    assert s.standin.completions == [s.code, s.code]
    for name in ("prolific_refused.png", "prolific_task.png", "prolific_completed.png"):
        assert (shots / name).stat().st_size > 5_000
