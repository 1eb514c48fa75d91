"""How different a pair's two images are (pairs.csv's diff_mean_abs and diff_ssim), the per-DAG
and per-setting summary, and the warning about pairs people cannot tell apart, shown by
generate's summary, the report and publish --dry-run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from mturk_helpers import PUBLISH_OPTIONS
from PIL import Image

from cage.pairs import difference as pair_difference
from cage_eval import runs
from cage_eval.cli import cli


def test_identical_images_differ_by_nothing_and_black_and_white_by_everything():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    assert pair_difference.difference(a, a) == (0.0, pytest.approx(1.0))
    black, white = np.zeros((16, 16), np.uint8), np.full((16, 16), 255, np.uint8)
    mad, ssim = pair_difference.difference(black, white)
    assert mad == 255.0 and ssim < 0.01
    b = a.copy()
    b[:8] = 255 - b[:8]  # a quarter of the rows inverted
    mad, _ = pair_difference.difference(a, b)
    assert mad == pytest.approx(np.abs(a[:8].astype(int) - b[:8].astype(int)).sum() / a.size)
    with pytest.raises(ValueError, match="different shapes"):
        pair_difference.difference(a, black)


def _rows(values, setting="same_source", dag="a->b"):
    return [{"dag": dag, "setting": setting, "diff_mean_abs": f"{v:.3f}", "diff_ssim": "0.99"}
            for v in values]


def test_a_setting_whose_median_pair_is_below_the_threshold_is_flagged():
    rows = _rows([0.5, 1.0, 1.0, 14.0]) + _rows([16.0, 17.0], setting="same_destination")
    summary = pair_difference.by_setting(rows)
    assert list(summary) == ["same_source", "same_destination"]
    src = summary["same_source"]
    assert src["median_mean_abs"] == 1.0 and src["max_mean_abs"] == 14.0
    assert src["below_threshold"] == 3 and not src["perceptible"]
    assert summary["same_destination"]["perceptible"]
    warnings = pair_difference.warnings_of({"dag_sources": [{"dag": "a->b",
                                                              "difference": summary}]})
    assert len(warnings) == 1
    assert warnings[0].startswith("a->b same-source: the two images of its pairs differ by a "
                                  "median 1.0/255 mean absolute pixel difference (max 14.0/255")
    assert "3 of 4 pairs below 3/255" in warnings[0] and "raise [pairs] alpha_min" in warnings[0]


def test_rows_are_measured_from_the_written_images(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 51, np.uint8)).save(tmp_path / "b.png")
    rows = [{"image_cause": "a.png", "image_effect": "b.png"}]
    pair_difference.measure_rows(rows, tmp_path)
    assert rows[0]["diff_mean_abs"] == "51.000"
    assert 0 <= float(rows[0]["diff_ssim"]) < 1


def test_publish_dry_run_repeats_the_warning(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    manifest = json.loads((run / runs.MANIFEST).read_text())
    text = "a->b same-source: the two images of its pairs differ by a median 1.0/255 ..."
    manifest["pairs"] = {"difference_warnings": [text]}
    (run / runs.MANIFEST).write_text(json.dumps(manifest))
    res = CliRunner().invoke(cli, ["publish", str(run), "--dry-run", *PUBLISH_OPTIONS,
                                   "--endpoint-url", "http://127.0.0.1:9"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"WARNING: pairs people cannot tell apart: {text}" in res.output


def _flagged_entry():
    from report_fixtures import pairs_entry

    entry = pairs_entry()
    summary = pair_difference.by_setting(_rows([0.5, 1.0, 1.0, 14.0], dag="thick->bright"))
    entry["dag_sources"][0]["difference"] = summary
    entry["difference_threshold"] = pair_difference.PERCEPTIBLE_MEAN_ABS
    entry["difference_warnings"] = pair_difference.warnings_of(entry)
    return entry


def test_the_report_shows_each_dags_pair_difference_and_the_warning(tmp_path):
    from report_fixtures import make_report_run

    from report.data import read_report
    from report.html import render_report

    run = tmp_path / "run"
    make_report_run(run)
    manifest = json.loads((run / runs.MANIFEST).read_text())
    manifest["pairs"] = _flagged_entry()
    (run / runs.MANIFEST).write_text(json.dumps(manifest))
    html = render_report(read_report(run))
    assert "Pairs people cannot tell apart: thick-&gt;bright same-source: the two images" in html
    assert "same-source 1.0 (max 14.0)" in html and "less than 3/255" in html


def test_generates_summary_lists_the_differences_and_the_warning(tmp_path):
    from cage_eval.cli.generate import _pair_lines

    entry = _flagged_entry()
    entry.update(rows=4, images=8)
    for rec in entry["dag_sources"]:
        rec.setdefault("rows", 4)
    text = "\n".join(_pair_lines(entry, tmp_path))
    assert ("same-source: the two images of a pair differ by a median 1.0/255 mean absolute "
            "pixel difference (max 14.0/255), median SSIM 0.990") in text
    assert "WARNING: pairs people cannot tell apart: thick->bright same-source" in text
