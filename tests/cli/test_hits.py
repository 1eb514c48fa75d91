"""``cage-eval hits`` and ``cage-eval export-batch`` through click's CliRunner."""

from __future__ import annotations

import csv
import json
import re

import boto3
import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir

from cage_eval import runs
from cage_eval.cli import cli
from hitgen.items import read_hit_items
from hitgen.texts import DOMAIN_TEXTS


@pytest.fixture()
def run(tmp_path):
    return make_run_dir(tmp_path / "run", pairs_per_cell=2)


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_hits_builds_items_and_previews(run):
    result = _invoke("hits", run, "--attention-rate", "0.25")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{run / runs.HIT_ITEMS}: 10 HIT items (8 pairs, 2 attention checks)"
    assert re.fullmatch(r"  thick->bright\s+same_source\s+2 pairs, cause on top in 1", lines[4])
    assert re.fullmatch(r"largest HTMLQuestion with inlined images: \d,\d{3} bytes \(limit 65,535\)",
                        lines[5])
    assert lines[6] == f"preview: {run / 'hits_preview' / 'index.html'}"
    items = read_hit_items(run)
    pages = sorted(p.stem for p in (run / "hits_preview").glob("h*.html"))
    assert pages == sorted(it.item_id for it in items)
    index = (run / "hits_preview" / "index.html").read_text()
    assert all(f'href="{it.item_id}.html"' in index for it in items)
    assert "cause" not in index


def test_hits_rerun_is_idempotent_and_refuses_a_silent_change(run):
    assert _invoke("hits", run, "--no-preview").exit_code == 0
    before = (run / runs.HIT_ITEMS).read_bytes()
    assert _invoke("hits", run, "--no-preview").exit_code == 0
    assert (run / runs.HIT_ITEMS).read_bytes() == before
    images_before = sorted(p.name for p in (run / "images").iterdir())
    result = CliRunner().invoke(cli, ["hits", str(run), "--seed", "5", "--attention-rate", "0.5"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {run / runs.HIT_ITEMS}: exists with a different placement")
    assert (run / runs.HIT_ITEMS).read_bytes() == before
    assert sorted(p.name for p in (run / "images").iterdir()) == images_before  # nothing partial
    assert _invoke("hits", run, "--seed", "5", "--force", "--no-preview").exit_code == 0
    assert (run / runs.HIT_ITEMS).read_bytes() != before


def test_hits_refuses_to_change_items_once_published(run):
    assert _invoke("hits", run, "--no-preview").exit_code == 0
    (run / runs.LEDGER).write_bytes(b"")
    result = CliRunner().invoke(cli, ["hits", str(run), "--seed", "9", "--force"])
    assert result.exit_code == 1
    assert "HITs were already published" in result.output
    assert _invoke("hits", run, "--no-preview").exit_code == 0  # same options: fine


@pytest.mark.parametrize("args, message", [
    (["--attention-rate", "2"], "Error: attention rate 2.0 is outside [0, 1]"),
    (["--texts", "missing.json"], "Error: missing.json: cannot read the texts file"),
    (["--templates", "no-such-dir"], "Error: templates directory no-such-dir does not exist"),
])
def test_hits_bad_options(run, args, message):
    result = CliRunner().invoke(cli, ["hits", str(run), *args])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(message)
    assert not (run / runs.HIT_ITEMS).exists()
    assert not (run / "hits_preview").exists()


def test_hits_on_a_directory_without_a_run_or_pairs(tmp_path, run):
    result = CliRunner().invoke(cli, ["hits", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "no such run directory" in result.output
    (run / runs.PAIRS).unlink()
    result = CliRunner().invoke(cli, ["hits", str(run)])
    assert result.exit_code == 1
    assert result.output == f"Error: {run / runs.PAIRS}: missing; run `cage-eval generate --out {run}` first\n"


def test_export_batch_with_data_uris_and_base_url(run, tmp_path):
    result = CliRunner().invoke(cli, ["export-batch", str(run), "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "run `cage-eval hits" in result.output
    assert not (tmp_path / "b").exists()
    assert _invoke("hits", run, "--no-preview", "--domain", "faces").exit_code == 0
    result = _invoke("export-batch", run, "--out", tmp_path / "b", "--domain", "faces")
    assert result.exit_code == 0, result.output
    assert "8 rows (item_id, image_top, image_bottom)" in result.output
    template = (tmp_path / "b" / "batch_template.html").read_text()
    assert "actual human faces" in template and "<form" not in template
    with open(tmp_path / "b" / "batch_input.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["item_id"] for r in rows] == [it.item_id for it in read_hit_items(run)]
    assert all(r["image_top"].startswith("data:image/png;base64,") for r in rows)

    result = _invoke("export-batch", run, "--out", tmp_path / "c",
                     "--image-base-url", "https://images.example.org/hits/")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "c" / "batch_input.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["image_top"].startswith("https://images.example.org/hits/")
    assert (tmp_path / "c" / "images" / row["image_top"].rsplit("/", 1)[1]).is_file()
    result = CliRunner().invoke(cli, ["export-batch", str(run), "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "--force" in result.output
    result = CliRunner().invoke(cli, ["export-batch", str(run), "--out", str(tmp_path / "d"),
                                      "--s3-bucket", ""])
    assert result.exit_code == 1
    assert result.output == "Error: no S3 bucket given; name an existing bucket with --s3-bucket\n"
    assert not (tmp_path / "d").exists()


def test_export_batch_to_s3(run, tmp_path, monkeypatch, s3_endpoint):
    endpoint = s3_endpoint
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="hits-bucket")
    assert _invoke("hits", run, "--no-preview").exit_code == 0
    args = ["export-batch", run, "--s3-bucket", "hits-bucket", "--endpoint-url", endpoint,
            "--expires-in", "86400"]
    result = _invoke(*args, "--out", tmp_path / "s1")
    assert result.exit_code == 0, result.output
    assert "s3://hits-bucket/cage-eval/5e1f0c2a9b7d4e33/: 16 images uploaded, 0 already there" \
        in result.output
    result = _invoke(*args, "--out", tmp_path / "s2")
    assert "0 images uploaded, 16 already there" in result.output
    with open(tmp_path / "s2" / "batch_input.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["image_top"].startswith(endpoint) and "X-Amz-Expires=86400" in row["image_top"]
    result = CliRunner().invoke(cli, [str(a) for a in args[:-1]] + ["700000", "--out",
                                                                    str(tmp_path / "s3")])
    assert result.exit_code == 1 and "7 days" in result.output
    assert not (tmp_path / "s3").exists()
    result = CliRunner().invoke(cli, ["export-batch", str(run), "--out", str(tmp_path / "s4"),
                                      "--s3-bucket", "missing-bucket", "--endpoint-url", endpoint])
    assert result.exit_code == 1
    assert result.output.startswith("Error: S3 bucket 'missing-bucket' does not exist")
    assert not (tmp_path / "s4").exists()


@pytest.mark.parametrize("question", ["Which is real? ${secret}", "Which is real? ${unclosed",
                                      "Which is real? ${ item_id }"])
def test_export_batch_refuses_unknown_placeholders_from_texts(run, tmp_path, question):
    assert _invoke("hits", run, "--no-preview").exit_code == 0
    texts = dict(DOMAIN_TEXTS["digits"], question=question)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    result = _invoke("export-batch", run, "--out", tmp_path / "b", "--texts", tmp_path / "texts.json")
    assert result.exit_code == 1
    assert result.output.startswith("Error: template cage_eval_templates/batch.html.jinja: unknown "
                                    "placeholder(s) '${")
    assert "the input CSV fills only ${item_id}, ${image_top}, ${image_bottom}" in result.output
    assert not (tmp_path / "b").exists()
