"""The rendered HIT pages in a real headless Chromium, posting to a capture server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse

import pytest
from browser_fixtures import browser_marks
from crowd_fixtures import make_run_dir

from hitgen.hosting import DataUriHost
from hitgen.items import plan_hit_items
from hitgen.render import render_mturk_page, render_turkle_template
from hitgen.texts import HitTexts

pytestmark = browser_marks()


class _Capture(http.server.ThreadingHTTPServer):
    """Serves pages from ``self.pages`` on GET and records every POST body (parsed)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pages: dict[str, str] = {}
        self.posts: list[tuple[str, dict[str, list[str]]]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Capture

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: str) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path in self.server.pages:
            self._send(200, self.server.pages[path])
        else:
            self._send(404, "<p>not found</p>")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        self.server.posts.append((self.path, urllib.parse.parse_qs(body, keep_blank_values=True)))
        self._send(200, "<!DOCTYPE html><p id='done'>received</p>")


@pytest.fixture(scope="module")
def capture():
    server = _Capture()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def hit(tmp_path_factory, capture):
    run = make_run_dir(tmp_path_factory.mktemp("browser") / "run", pairs_per_cell=1)
    item = plan_hit_items(run, seed=0).items[0]
    host = DataUriHost(run)
    page = render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom),
                             HitTexts.for_domain("digits"))
    capture.pages["/hit.html"] = page
    return run, item


def _open(driver, capture, **params) -> None:
    driver.get(f"{capture.base}/hit.html?{urllib.parse.urlencode(params)}")


def _wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the browser")


def test_preview_keeps_submit_disabled(driver, capture, hit):
    from selenium.webdriver.common.by import By

    _open(driver, capture, assignmentId="ASSIGNMENT_ID_NOT_AVAILABLE", hitId="3PREVIEWHIT",
          turkSubmitTo=capture.base)
    submit = driver.find_element(By.ID, "submitButton")
    assert not submit.is_enabled()
    assert "Preview" in driver.find_element(By.ID, "status").text
    driver.find_element(By.CSS_SELECTOR, 'label[for="choice-top"]').click()
    assert driver.find_element(By.ID, "choice-top").is_selected()
    assert not submit.is_enabled()
    n = len(capture.posts)
    driver.execute_script("document.getElementById('mturk_form').requestSubmit();")
    time.sleep(0.3)
    assert len(capture.posts) == n  # the script refuses a preview submit, even a forced one


def test_answer_then_submit_posts_the_fields(driver, capture, hit, tmp_path_factory):
    from selenium.webdriver.common.by import By

    _, item = hit
    _open(driver, capture, assignmentId="3ASSIGNMENTABC", hitId="3HITXYZ", workerId="AWORKER",
          turkSubmitTo=capture.base + "/")
    submit = driver.find_element(By.ID, "submitButton")
    assert not submit.is_enabled()  # accepted but not answered yet
    assert driver.find_element(By.ID, "assignmentId").get_attribute("value") == "3ASSIGNMENTABC"
    images = driver.find_elements(By.CSS_SELECTOR, "img.cage-image")
    assert len(images) == 2
    assert all(driver.execute_script("return arguments[0].naturalWidth", im) == 28 for im in images)
    driver.find_element(By.CSS_SELECTOR, 'img[alt="Bottom image"]').click()
    assert driver.find_element(By.ID, "choice-bottom").is_selected()
    assert submit.is_enabled()
    shots = tmp_path_factory.mktemp("screenshots")
    shot = shots / "hit_answered.png"
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 5_000
    n = len(capture.posts)
    time.sleep(0.05)
    submit.click()
    _wait_for(lambda: len(capture.posts) > n)
    path, fields = capture.posts[-1]
    assert path == "/mturk/externalSubmit"
    assert set(fields) == {"assignmentId", "item_id", "choice", "elapsed_ms"}
    assert fields["assignmentId"] == ["3ASSIGNMENTABC"]
    assert fields["item_id"] == [item.item_id]
    assert fields["choice"] == ["bottom"]
    assert int(fields["elapsed_ms"][0]) >= 50
    _wait_for(lambda: driver.find_elements(By.ID, "done"))


def test_turkle_fragment_inside_turkles_form(driver, capture, hit):
    """Turkle wraps the fragment in its own form and submit button and substitutes ${...} raw."""
    from selenium.webdriver.common.by import By

    run, item = hit
    host = DataUriHost(run)
    fragment = render_turkle_template(HitTexts.for_domain("faces"))
    for field, value in (("item_id", item.item_id), ("image_top", host.url(item.image_top)),
                         ("image_bottom", host.url(item.image_bottom))):
        fragment = fragment.replace("${" + field + "}", value)
    capture.pages["/turkle.html"] = (
        "<!DOCTYPE html><html><body>"
        f'<form name="mturk_form" method="post" id="mturk_form" action="{capture.base}/task/1/assignment/2/">'
        f'{fragment}<input type="submit" id="submitButton" value="Submit"></form></body></html>'
    )
    driver.get(f"{capture.base}/turkle.html")
    n = len(capture.posts)
    driver.find_element(By.ID, "submitButton").click()  # no answer: the browser refuses
    time.sleep(0.3)
    assert len(capture.posts) == n
    driver.find_element(By.CSS_SELECTOR, 'label[for="choice-top"]').click()
    driver.find_element(By.ID, "submitButton").click()
    _wait_for(lambda: len(capture.posts) > n)
    path, fields = capture.posts[-1]
    assert path == "/task/1/assignment/2/"
    assert fields["choice"] == ["top"] and fields["item_id"] == [item.item_id]
    assert int(fields["elapsed_ms"][0]) >= 0
