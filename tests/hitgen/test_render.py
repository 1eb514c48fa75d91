"""Rendering: MTurk page rules, blinding, size limits, fragments, texts, hosts, overrides."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from crowd_fixtures import make_run_dir, write_png

from cage_eval import runs
from cage_eval.errors import ConfigError, InputFileError, RunDirError
from hitgen.batch import export_batch, input_rows
from hitgen.hosting import DataUriHost, UrlPrefixHost, check_substitution_value
from hitgen.items import HitItem, plan_hit_items
from hitgen.render import (
    HTML_QUESTION_XMLNS,
    MAX_QUESTION_BYTES,
    check_fragment,
    check_mturk_page,
    html_question,
    question_bytes,
    render_batch_template,
    render_mturk_page,
    render_turkle_template,
    template_digest,
)
from hitgen.texts import DOMAIN_TEXTS, HitTexts

DIGITS = HitTexts.for_domain("digits")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = make_run_dir(tmp_path_factory.mktemp("render") / "run", pairs_per_cell=2)
    plan = plan_hit_items(run, seed=0, attention_rate=0.5)
    plan.write_images(run)
    return run, plan.items


def _page(item: HitItem, run: Path, texts: HitTexts = DIGITS, **kw) -> str:
    host = DataUriHost(run)
    return render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom), texts, **kw)


def test_mturk_page_has_the_required_structure(run):
    run_dir, items = run
    page = _page(items[0], run_dir)
    assert page.startswith("<!DOCTYPE html>")
    assert len(re.findall(r"<form\b", page)) == 1 and 'method="post"' in page
    assert re.search(r'<input type="hidden" name="assignmentId" id="assignmentId" value="">', page)
    assert re.search(r'<input type="submit"[^>]*\bdisabled>', page)
    assert f'name="item_id" id="item_id" value="{items[0].item_id}"' in page
    assert 'name="elapsed_ms"' in page
    assert page.count('type="radio" name="choice"') == 2
    assert 'value="top" required' in page and 'value="bottom" required' in page
    assert '"turkSubmitTo"' in page and '"/mturk/externalSubmit"' in page
    assert '"ASSIGNMENT_ID_NOT_AVAILABLE"' in page
    assert DIGITS.question.replace("'", "&#39;") in page
    assert page.index('value="top"') < page.index('value="bottom"')


def test_page_shows_the_item_images_in_their_places(run):
    run_dir, items = run
    item = items[0]
    page = _page(item, run_dir)
    srcs = re.findall(r'<img class="cage-image" src="data:image/png;base64,([^"]+)"', page)
    assert len(srcs) == 2
    assert base64.b64decode(srcs[0]) == (run_dir / "images" / item.image_top).read_bytes()
    assert base64.b64decode(srcs[1]) == (run_dir / "images" / item.image_bottom).read_bytes()


def _blinding_leaks(page: str, item: HitItem, pairs: list[dict[str, str]]) -> list[str]:
    forbidden = ["cause", "effect", "clean", "corrupt", "attention", "same_source",
                 "same_destination", "expected", "role", "->", "&gt;", item.image_top,
                 item.image_bottom, "pair"]
    for row in pairs:
        forbidden += [row["pair_id"], row["dag"], row["cause"], row["effect"]]
        forbidden += [row[c] for c in ("image_cause", "image_effect", "image_source_cause",
                                       "image_source_effect")]
    low = page.lower()
    return sorted({w for w in forbidden if w and w.lower() in low})


def test_pages_are_blind_to_roles_pairs_and_names(run):
    run_dir, items = run
    with open(run_dir / runs.PAIRS, newline="") as fh:
        pairs = list(csv.DictReader(fh))
    host = UrlPrefixHost(run_dir, "https://img.example.org/x")
    for item in items:
        for page in (_page(item, run_dir),
                     render_mturk_page(item, "https://img.example.org/a.png",
                                       "https://img.example.org/b.png", DIGITS)):
            assert _blinding_leaks(page, item, pairs) == []
    # The two options differ only by position: same markup once position words are removed.
    page = _page(items[0], run_dir)
    blocks = re.findall(r'<label class="cage-option".*?</label>', page, flags=re.S)
    assert len(blocks) == 2
    norm = [re.sub(r"top|bottom|Top|Bottom|src=\"[^\"]*\"", "", b) for b in blocks]
    assert norm[0] == norm[1]
    # Even a host's URL carries only the opaque file name.
    assert host.url(items[0].image_top).endswith("/" + items[0].image_top)


def test_template_context_offers_no_roles(run, tmp_path):
    run_dir, items = run
    (tmp_path / "mturk.html.jinja").write_text("{{ role_top }}")
    with pytest.raises(ConfigError, match="'role_top' is undefined"):
        _page(items[0], run_dir, templates_dir=tmp_path)


def test_texts_are_escaped_and_never_rendered_as_templates(run):
    run_dir, items = run
    evil = HitTexts(title="t", description="d", keywords="k",
                    question="{{ 7*7 }} <script>alert(1)</script>",
                    instructions="{% for x in [1] %}loop{% endfor %} & more",
                    top_label="<b>T</b>", bottom_label="B")
    page = _page(items[0], run_dir, texts=evil)
    assert "{{ 7*7 }} &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "49" not in re.sub(r"data:[^\"]+", "", page)
    assert "{% for x in [1] %}loop{% endfor %} &amp; more" in page
    assert "&lt;b&gt;T&lt;/b&gt;" in page and "<script>alert" not in page


def test_html_question_wraps_the_page_in_cdata(run):
    run_dir, items = run
    page = _page(items[0], run_dir)
    xml = html_question(page, frame_height=600)
    root = ET.fromstring(xml.encode("utf-8"))
    ns = {"q": HTML_QUESTION_XMLNS}
    assert root.tag == f"{{{HTML_QUESTION_XMLNS}}}HTMLQuestion"
    assert root.find("q:HTMLContent", ns).text == page
    assert root.find("q:FrameHeight", ns).text == "600"
    assert html_question(page).count("<FrameHeight>0</FrameHeight>") == 1


def test_html_question_size_limit_and_cdata_terminator():
    filler = "<!DOCTYPE html>" + "x" * 70_000
    with pytest.raises(ConfigError, match=r"over MTurk's limit of 65,535.*S3"):
        html_question(filler)
    overhead = len(html_question("").encode())
    exact = "y" * (MAX_QUESTION_BYTES - overhead)
    assert len(html_question(exact).encode()) == MAX_QUESTION_BYTES
    with pytest.raises(ConfigError, match="over"):
        html_question(exact + "y")
    # The preview measures an oversized question (large inlined images) without refusing it.
    assert question_bytes(filler) == len(html_question(filler, check_size=False).encode()) > 70_000
    assert question_bytes(exact) == MAX_QUESTION_BYTES
    with pytest.raises(ConfigError, match="over"):  # bytes, not characters
        html_question(exact[:-1] + "é")
    with pytest.raises(ConfigError, match=r"\]\]>"):
        html_question("<p>a]]>b</p>")


def test_large_inlined_images_exceed_the_limit(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    # Two images of incompressible noise: their data URIs alone are over 64 KB.
    noise = np.random.default_rng(0).integers(0, 256, size=(2, 200, 200), dtype=np.uint8)
    item = dataclasses.replace(plan_hit_items(run).items[0], image_top=write_png(run / "images", noise[0]),
                               image_bottom=write_png(run / "images", noise[1]))
    with pytest.raises(ConfigError, match="65,535"):
        html_question(_page(item, run))


def test_turkle_fragment_and_batch_template_follow_the_fragment_rules():
    for html in (render_turkle_template(DIGITS), render_batch_template(DIGITS)):
        assert "<form" not in html.lower()
        assert "${item_id}" in html and "${image_top}" in html and "${image_bottom}" in html
        assert 'name="choice"' in html and 'name="item_id"' in html and 'name="elapsed_ms"' in html
        assert "<!DOCTYPE" not in html
        check_fragment(html)


def test_template_checks_reject_broken_templates(run):
    run_dir, items = run
    page = _page(items[0], run_dir)
    check_mturk_page(page)
    with pytest.raises(ConfigError, match="one <form"):
        check_mturk_page(page.replace('<form method="post"', '<form method="get"'))
    with pytest.raises(ConfigError, match="assignmentId"):
        check_mturk_page(page.replace('name="assignmentId"', 'name="aid"'))
    with pytest.raises(ConfigError, match="starts disabled"):
        check_mturk_page(page.replace('value="Submit" disabled>', 'value="Submit">'))
    with pytest.raises(ConfigError, match="must be required"):
        check_mturk_page(page.replace('value="top" required', 'value="top"'))
    with pytest.raises(ConfigError, match="complete document"):
        check_mturk_page(page.replace("<!DOCTYPE html>", ""))
    fragment = render_turkle_template(DIGITS)
    with pytest.raises(ConfigError, match="must not contain a <form>"):
        check_fragment("<form>" + fragment + "</form>")
    with pytest.raises(ConfigError, match=r"\$\{image_top\}"):
        check_fragment(fragment.replace("${image_top}", "x.png"))


def test_templates_dir_overrides_one_template_and_keeps_the_rest(run, tmp_path):
    run_dir, items = run
    custom = tmp_path / "tpl"
    custom.mkdir()
    (custom / "_style.html.jinja").write_text("<style>.cage-hit { color: teal; }</style>\n")
    page = _page(items[0], run_dir, templates_dir=custom)
    assert "color: teal" in page and "object-fit" not in page
    assert template_digest(custom) != template_digest() == template_digest()
    assert re.fullmatch(r"[0-9a-f]{12}", template_digest())
    check_mturk_page(page)
    (custom / "turkle.html.jinja").write_text("<div>{{ question }}</div>")
    with pytest.raises(ConfigError, match="needs at least one named input"):
        render_turkle_template(DIGITS, templates_dir=custom)
    (custom / "turkle.html.jinja").write_text("{% if %}")
    with pytest.raises(ConfigError, match="turkle.html.jinja, line 1"):
        render_turkle_template(DIGITS, templates_dir=custom)
    with pytest.raises(ConfigError, match="does not exist"):
        render_turkle_template(DIGITS, templates_dir=tmp_path / "nope")


def test_domain_texts():
    faces = HitTexts.for_domain("faces")
    assert faces.question.startswith("Which image is more realistic when compared to actual human faces?")
    assert "fool you as being a real person's picture if shown briefly" in faces.question
    assert DIGITS.question != faces.question and "handwritten digits" in DIGITS.question
    assert (faces.top_label, faces.bottom_label) == ("Top image", "Bottom image")
    with pytest.raises(ConfigError, match="'cars'.*digits, faces"):
        HitTexts.for_domain("cars")


def test_texts_from_json_and_toml(tmp_path):
    data = dict(DOMAIN_TEXTS["digits"], question="Which bird looks real?")
    (tmp_path / "t.json").write_text(json.dumps(data))
    assert HitTexts.from_file(tmp_path / "t.json").question == "Which bird looks real?"
    toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in data.items())
    (tmp_path / "t.toml").write_text(toml)
    assert HitTexts.from_file(tmp_path / "t.toml") == HitTexts(**data)
    (tmp_path / "bad.json").write_text(json.dumps({**data, "colour": "red"}))
    with pytest.raises(InputFileError, match="unknown keys: colour"):
        HitTexts.from_file(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InputFileError, match="not valid json"):
        HitTexts.from_file(tmp_path / "bad.json")
    with pytest.raises(InputFileError, match="cannot read"):
        HitTexts.from_file(tmp_path / "missing.json")


def test_hosts_and_substitution_safety(run):
    run_dir, items = run
    host = DataUriHost(run_dir)
    uri = host.url(items[0].image_top)
    assert uri.startswith("data:image/png;base64,")
    check_substitution_value(uri, field="image_top")
    with pytest.raises(RunDirError, match="plain file name"):
        host.url("../pairs.csv")
    with pytest.raises(RunDirError, match="missing"):
        host.url("ffffffffffffffff.png")
    with pytest.raises(ConfigError, match="https://"):
        UrlPrefixHost(run_dir, "ftp://example.org")
    with pytest.raises(ConfigError, match="substitution"):
        check_substitution_value('x" onerror="alert(1)', field="image_top")


def test_batch_export_rows_and_size_check(run, tmp_path):
    run_dir, items = run
    out = tmp_path / "batch"
    out.mkdir()
    result = export_batch(out, items, UrlPrefixHost(run_dir, "https://h.example.org/i"), DIGITS,
                          copy_images_from=run_dir)
    with open(result.input_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["item_id", "image_top", "image_bottom"]
    assert [r["item_id"] for r in rows] == [it.item_id for it in items]
    assert rows[0]["image_top"] == f"https://h.example.org/i/{items[0].image_top}"
    assert result.images_copied == len({n for it in items for n in (it.image_top, it.image_bottom)})
    assert result.template.read_text() == render_batch_template(DIGITS)
    assert "cause" not in result.input_csv.read_text()
    rows = input_rows(items[:1], DataUriHost(run_dir))
    assert rows[0]["image_bottom"].startswith("data:image/png;base64,")
