"""RUN/report.html of a small digits run, before and after (simulated) answers, opened from disk
in a real headless Chromium: every image decodes, every section is there, nothing is fetched.

Set ``CAGE_EVAL_REPORT_SCREENSHOTS=DIR`` to keep the full-page screenshots for a person to look
at (they are always taken and checked to be non-blank)."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import pytest
from browser_fixtures import BROWSER_MARKS

from cage_eval import runs

pytestmark = [*BROWSER_MARKS, pytest.mark.slow]

SECTIONS = ("summary", "facts", "separability", "directions", "plots", "pairs", "answers",
            "money", "reproduce")

#: Everything the page's elements ask the browser to load, and what the browser recorded.
PAGE_FACTS = """
const imgs = Array.from(document.images);
return {
  images: imgs.map(i => ({src: i.getAttribute('src').slice(0, 22), complete: i.complete,
                          width: i.naturalWidth, height: i.naturalHeight})),
  sources: Array.from(document.querySelectorAll('[src], [href], [srcset], [poster]'))
    .map(e => e.getAttribute('src') || e.getAttribute('srcset') || e.getAttribute('poster')
              || e.getAttribute('href')),
  resources: performance.getEntriesByType('resource').map(r => r.name),
  sections: Array.from(document.querySelectorAll('main > section')).map(
    s => [s.id, (s.querySelector('h2') || {}).textContent || '']),
  scripts: document.scripts.length,
  links: document.querySelectorAll('link, iframe, object, embed').length,
  height: document.documentElement.scrollHeight,
  text: document.body.innerText,
};
"""


def _open(driver, path: Path) -> dict:
    driver.set_window_size(1280, 1000)
    driver.get(path.resolve().as_uri())
    return driver.execute_script(PAGE_FACTS)


def _screenshot(driver, height: int, name: str, tmp_path: Path) -> Path:
    """A full-page screenshot (through the DevTools protocol), checked to be non-blank."""
    from PIL import Image, ImageStat

    clip = {"x": 0, "y": 0, "width": 1280, "height": min(height, 16000), "scale": 1}
    shot = tmp_path / f"{name}.png"
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
    shot.write_bytes(base64.b64decode(data))
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("L")
    assert image.width == 1280 and image.height == clip["height"] > 1000
    assert ImageStat.Stat(image).stddev[0] > 10, "the screenshot is blank"
    keep = os.environ.get("CAGE_EVAL_REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return shot


def _check_page(facts: dict, n_images: int) -> None:
    assert [s[0] for s in facts["sections"]] == list(SECTIONS)
    assert all(title.strip() for _, title in facts["sections"])
    assert len(facts["images"]) == n_images
    for img in facts["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
        assert img["src"].startswith("data:image/png;base64")
    # No network: no element asks for anything but data: images and in-page anchors, and the
    # browser recorded no resource load.
    assert all(s.startswith(("data:", "#")) for s in facts["sources"]), facts["sources"]
    assert facts["resources"] == [] and facts["scripts"] == 0 and facts["links"] == 0


def test_report_of_a_run_without_answers(driver, tiny_digits_run, tmp_path):
    facts = _open(driver, tiny_digits_run / runs.REPORT)
    plots = len(list((tiny_digits_run / runs.PLOTS_DIR).glob("*.png")))
    sheets = len(list((tiny_digits_run / runs.SHEETS_DIR).glob("*.png")))
    assert (plots, sheets) == (4, 2)
    _check_page(facts, plots + sheets)
    text = facts["text"]
    assert "thick / bright: CAGE finds" in text
    assert "No answers yet" in text and "Nothing was published from this run" in text
    assert "SIMULATED DATA" not in text
    _screenshot(driver, facts["height"], "report-no-answers", tmp_path)


def test_report_of_a_run_with_simulated_answers(driver, answered_digits_run, tmp_path):
    facts = _open(driver, answered_digits_run / runs.REPORT)
    _check_page(facts, 4 + 2)
    text = facts["text"]
    assert text.count("SIMULATED DATA: all judgements come from simulated annotators") == 2
    for heading in ("Per cell", "Robustness (clustered judgements)", "Coverage",
                    "Exclusions and plan", "Workers"):
        assert heading in text
    assert "Every pair of the run is answered" in text and "Attention checks:" in text
    assert "simulated answers cost nothing" in text
    _screenshot(driver, facts["height"], "report-simulated-answers", tmp_path)


WIDE = 1400
#: A small synthetic run (both variants, the α grid of the built-in experiments), fast to make.
SYNTHETIC = ("cage.k=900", "cage.n_null=19", "cage.k_null_observation=150", "cage.mmd_n=30",
             "cage.mmd_permutations=10", "cage.alphas=[0.5, 1.0, 1.5, 2.0, 3.0]",
             "synthetic.dim=8", "synthetic.n=600", "cage.baselines=false",
             # Names as long as real attributes', so that long titles are tried.
             'synthetic.attributes=["thickness", "brightness"]',
             'cage.pairs=[["thickness", "brightness"]]')


def test_report_at_1400_px_and_its_plots_text_boxes(driver, tmp_path, monkeypatch):
    """The page at 1400 px: nothing wider than the window, every plot shown whole; and in every
    plot of the run no two text boxes overlap and none is cut off (matplotlib's own bounding
    boxes of titles, axis and tick labels and legends, measured as each figure is saved, not
    guessed from pixels)."""
    from click.testing import CliRunner

    import cage.run.plots
    from cage.compute.runtime import torch_threads
    from cage_eval.cli import cli

    overlaps: dict[str, list] = {}
    original = cage.run.plots.write_plots

    def write_plots(result, out_dir, hook=None):
        return original(result, out_dir, hook=lambda name, fig: overlaps.setdefault(
            name, cage.run.plots.overlapping_text(fig) + cage.run.plots.clipped_text(fig)))

    monkeypatch.setattr(cage.run.plots, "write_plots", write_plots)
    run = tmp_path / "run"
    args = ["generate", "-e", "synthetic", "--out", str(run)]
    for item in SYNTHETIC:
        args += ["--set", item]
    with torch_threads(1):
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(overlaps) == sorted(p.name for p in (run / runs.PLOTS_DIR).glob("*.png"))
    assert overlaps == {name: [] for name in overlaps}

    driver.set_window_size(WIDE, 1000)
    driver.get((run / runs.REPORT).resolve().as_uri())
    facts = driver.execute_script(PAGE_FACTS)
    layout = driver.execute_script("""
      return {width: document.documentElement.scrollWidth,
              viewport: document.documentElement.clientWidth,
              plots: Array.from(document.querySelectorAll('#plots img')).map(i => (
                {shown: i.getBoundingClientRect().width, natural: i.naturalWidth}))};""")
    assert layout["width"] <= layout["viewport"], layout
    assert len(layout["plots"]) == 4
    # Each plot is shown at least at 60 % of its pixel width: its 7-pt labels stay legible.
    assert all(p["shown"] >= 0.6 * min(p["natural"], layout["viewport"]) for p in layout["plots"])
    assert "p(Δτ off-centre)" in facts["text"] and "p(Δτ ≠ 0)" in facts["text"]
    clip = {"x": 0, "y": 0, "width": WIDE, "height": min(facts["height"], 16000), "scale": 1}
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
    shot = tmp_path / "report-1400.png"
    shot.write_bytes(base64.b64decode(data))
    from PIL import Image

    assert Image.open(shot).width == WIDE
    keep = os.environ.get("CAGE_EVAL_REPORT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
