"""A worker answers a published run in real headless Chromium against a real Turkle server."""

from __future__ import annotations

import csv
import io
import time

import pytest
from browser_fixtures import browser_marks, chromium
from crowd_fixtures import make_run_dir
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cage_eval import runs
from crowds.turkle import server as turkle_server
from crowds.turkle.api import TurkleAPI
from crowds.turkle.backend import TurklePublishOptions, collect, publish
from hitgen.items import read_hit_items

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

pytestmark = [*browser_marks(), pytest.mark.slow]


@pytest.fixture()
def browser():
    with chromium(window_size="1000,1100") as driver:
        yield driver


def test_worker_answers_in_chromium(tmp_path, browser):
    run = make_run_dir(tmp_path / "run", run_id="b70w5e000000001", pairs_per_cell=1)
    with turkle_server.start_server(tmp_path / "home", port=0, timeout=60) as server:
        api = TurkleAPI(server.url, turkle_server.read_credentials(server.home).token)
        turkle_server.add_workers(api, server.home, ["eve"])
        password = turkle_server.read_credentials(server.home).workers["eve"]
        result = publish(run, api, TurklePublishOptions(assignments=1, images="server"),
                         server_home=server.home)
        wait = WebDriverWait(browser, 20)

        browser.get(f"{server.url}/login/")
        browser.find_element(By.NAME, "username").send_keys("eve")
        browser.find_element(By.NAME, "password").send_keys(password)
        browser.find_element(By.NAME, "password").submit()
        wait.until(lambda d: "/login/" not in d.current_url)

        browser.get(result.worker_url)
        wait.until(lambda d: "/assignment/" in d.current_url)
        first_page = browser.current_url
        frame = wait.until(lambda d: d.find_element(By.ID, "task_assignment_iframe"))
        browser.switch_to.frame(frame)
        wait.until(lambda d: d.execute_script(
            "return Array.from(document.images).length == 2 && "
            "Array.from(document.images).every(i => i.complete && i.naturalWidth == 28)"))
        item_id = browser.find_element(By.ID, "item_id").get_attribute("value")
        browser.switch_to.default_content()
        shot = tmp_path / "turkle_task.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000

        browser.switch_to.frame(browser.find_element(By.ID, "task_assignment_iframe"))
        # The choice is required: submitting without one leaves the worker on the task.
        browser.find_element(By.ID, "submitButton").click()
        time.sleep(0.5)
        browser.switch_to.default_content()
        assert browser.current_url == first_page
        browser.switch_to.frame(browser.find_element(By.ID, "task_assignment_iframe"))
        time.sleep(0.3)  # the elapsed time the page measures is at least this
        browser.find_element(By.CSS_SELECTOR, "label[for=choice-bottom]").click()
        browser.find_element(By.ID, "submitButton").click()
        browser.switch_to.default_content()
        wait.until(lambda d: d.current_url != first_page)

        done = collect(run, api)
    assert done.rows == 1
    row = next(csv.DictReader(io.StringIO((run / runs.RESULTS).read_text())))
    assert row["Input.item_id"] == item_id == row["Answer.item_id"]
    assert item_id in {it.item_id for it in read_hit_items(run)}
    assert row["Answer.choice"] == "bottom"
    assert int(row["Answer.elapsed_ms"]) >= 300
    assert row["Turkle.Username"] == "eve" and int(row["WorkerId"]) > 0
    assert row["Input.image_top"].startswith("/cage-images/")
