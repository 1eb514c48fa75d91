"""``cage-eval publish`` through click's CliRunner: success, dry run, and every user mistake."""

import csv
import sqlite3

import pytest
from click.testing import CliRunner
from fake_mturk import FakeMTurk
from mturk_helpers import (
    DUMMY_ACCESS_KEY,
    DUMMY_SECRET_KEY,
    PUBLISH_OPTIONS,
    snapshot,
    tree_bytes,
)

from analysis.quality import describe_rules, publish_plan
from cage_eval import runs
from cage_eval.cli import cli
from mturk.ledger import Ledger


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def ledger_dump(run):
    conn = sqlite3.connect(run / "ledger.sqlite")
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_publish_sandbox(aws_env, run_dir, fake):
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert result.exit_code == 0, result.output
    with Ledger.open(run_dir, environment="sandbox") as ledger:
        type_id = ledger.hit_type_id
        assert ledger.counts()["created"] == 8
    assert result.stdout == (
        f"Environment: sandbox ({fake.url})\n"
        "Run 5e1f0c2a9b7d4e33: 8 HITs (8 pairs, 0 attention checks); 0 already published\n"
        "Estimated cost: $0.05 x 3 assignments x 8 HITs x (1 + 20% fee) = $1.44 "
        "(rewards $1.20, fees $0.24)\n"
        "Analysis plan to freeze before the first HIT (pre-registered quality control):\n"
        + "".join(f"  {line}\n" for line in describe_rules(publish_plan(None, catch_trials=0)))
        + "Qualification requirements: 0 (sandbox: approval-rate, approved-count and locale "
        "requirements skipped)\n"
        "HITs: 8 of 8 published (8 created now, 0 already existed, 0 recovered from an interrupted run)\n"
        f"HIT type: {type_id}\n"
        f"Worker preview: https://workersandbox.mturk.com/mturk/preview?groupId={type_id}\n"
    )
    assert len(fake.hits) == 8 and (run_dir / runs.HIT_ITEMS).is_file()
    assert (run_dir / runs.ANALYSIS_PLAN).is_file()
    # The credentials were used (the endpoint saw the key id) but are written nowhere.
    assert fake.access_keys == {DUMMY_ACCESS_KEY}
    blob = tree_bytes(run_dir)
    assert DUMMY_ACCESS_KEY.encode() not in blob and DUMMY_SECRET_KEY.encode() not in blob
    assert DUMMY_SECRET_KEY not in result.output

    # Resume: hit_items.csv is reused, nothing new is created.
    items_before = (run_dir / runs.HIT_ITEMS).read_bytes()
    again = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert again.exit_code == 0 and "8 already published" in again.stdout
    assert "HITs: 8 of 8 published (0 created now" in again.stdout
    assert (run_dir / runs.HIT_ITEMS).read_bytes() == items_before and len(fake.hits) == 8


def test_production_needs_confirmation_showing_the_cost(aws_env, run_dir, fake):
    no = invoke("publish", run_dir, "--production", *PUBLISH_OPTIONS, "--endpoint-url", fake.url,
                input="n\n")
    assert no.exit_code == 1
    assert "Publish 8 HITs on the MTurk PRODUCTION site for an estimated $1.44 of real money?" in no.output
    assert "Aborted" in no.stderr and not (run_dir / "ledger.sqlite").exists() and not fake.hits
    yes = invoke("publish", run_dir, "--production", "--yes", *PUBLISH_OPTIONS, "--min-approval", "98",
                 "--endpoint-url", fake.url)
    assert yes.exit_code == 0, yes.output
    assert "Qualification requirements: 3\n" in yes.stdout
    assert "https://www.mturk.com/mturk/preview?groupId=" in yes.stdout
    reqs = next(iter(fake.hit_types.values()))["QualificationRequirements"]
    assert reqs[0]["IntegerValues"] == [98] and reqs[2]["LocaleValues"] == [{"Country": "US"}]
    with Ledger.open(run_dir) as ledger:
        assert ledger.environment == "production"
    # ... and the sandbox is now refused for this run.
    refused = invoke("publish", run_dir, "--sandbox", *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert refused.exit_code == 1 and "published to the MTurk production" in refused.stderr


def test_dry_run_calls_and_writes_nothing(run_dir):
    before = snapshot(run_dir)
    result = invoke("publish", run_dir, "--dry-run", *PUBLISH_OPTIONS, "--endpoint-url",
                    "http://127.0.0.1:9")  # nothing listens there: any call would fail
    assert result.exit_code == 0, result.output
    assert "Estimated cost: $0.05 x 3 assignments x 8 HITs" in result.stdout
    assert "Question XML: up to" in result.stdout and "of 65,535" in result.stdout
    assert "Power (exact two-sided binomial test vs 0.5)" in result.stdout
    assert result.stdout.endswith("Dry run: nothing was created and nothing was spent.\n")
    assert snapshot(run_dir) == before


def _no_pairs(run):
    with open(run / runs.PAIRS, "w", newline="") as fh:
        csv.writer(fh).writerow(runs.PAIRS_COLUMNS)


@pytest.mark.parametrize("extra, message", [
    (["--reward", "$0.05"], "Error: --reward '$0.05': not a dollar amount MTurk accepts"),
    (["--lifetime", "400d"], "Error: --lifetime '400d' = 34560000 s: outside MTurk's range"),
    (["--images", "s3"], "Error: --images s3 needs --bucket NAME"),
    (["--images", "s3", "--bucket", "b", "--lifetime", "8d"], "Error: --images s3: presigned image URLs"),
    (["--assignments", "10"], "Error: --assignments 10: 10 or more assignments per HIT double"),
    (["--max-cost", "1"], "Error: estimated cost $1.44"),
    (["--auto-approve", "31d"], "Error: --auto-approve '31d'"),
    (["--attention-rate", "2"], "Error: --attention-rate 2.0"),
    (["--domain", "cats"], "Error: domain 'cats' has no built-in HIT texts"),
])
def test_bad_options(aws_env, run_dir, fake, extra, message):
    before = snapshot(run_dir)
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, *extra, "--endpoint-url", fake.url)
    assert result.exit_code == 1
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    assert snapshot(run_dir) == before and not fake.calls


def test_run_without_pairs(aws_env, run_dir, fake):
    _no_pairs(run_dir)
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: {run_dir / runs.PAIRS}: has no pairs")
    assert not (run_dir / "ledger.sqlite").exists()


def test_not_a_run(tmp_path):
    result = invoke("publish", tmp_path / "nope", *PUBLISH_OPTIONS)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and "no such run directory" in result.stderr


def test_expired_credentials_leave_the_ledger_intact(aws_env, run_dir, fake):
    first = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert first.exit_code == 0
    # Pretend two HITs were never created: gone from the ledger and from MTurk.
    conn = sqlite3.connect(run_dir / "ledger.sqlite")
    gone = [h for (h,) in conn.execute("SELECT hit_id FROM hits WHERE rowid IN (3, 4)")]
    conn.execute("UPDATE hits SET state = 'pending', hit_id = NULL WHERE rowid IN (3, 4)")
    conn.commit()
    conn.close()
    for hit_id in gone:
        del fake.hits[hit_id]
    fake.tokens = {t: v for t, v in fake.tokens.items() if v[0] not in gone}
    before = ledger_dump(run_dir)
    with FakeMTurk(credential_error="ExpiredTokenException", max_lifetime_s=60) as expired:
        result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", expired.url)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: MTurk GetAccountBalance: AWS refused the credentials "
                                    "(ExpiredTokenException")
    assert ledger_dump(run_dir) == before
    resumed = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert resumed.exit_code == 0 and "(2 created now" in resumed.stdout and len(fake.hits) == 8


def test_unknown_profile(aws_env, run_dir):
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--profile", "nobody")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: --profile 'nobody': no such profile")
    assert not (run_dir / "ledger.sqlite").exists()


def test_publish_with_s3_images(aws_env, run_dir, fake, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="cage-eval-hits")
    s3_options = ["--images", "s3", "--bucket", "cage-eval-hits", "--s3-endpoint-url", s3_endpoint,
                  "--region", "us-east-1"]
    missing = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--images", "s3", "--bucket", "no-such-bucket",
                     "--s3-endpoint-url", s3_endpoint, "--region", "us-east-1", "--endpoint-url", fake.url)
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("Error: S3 bucket 'no-such-bucket' does not exist")
    assert not fake.hits and not fake.hit_types
    assert not (run_dir / "ledger.sqlite").exists() and not (run_dir / runs.HIT_ITEMS).exists()
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, *s3_options, "--endpoint-url", fake.url)
    assert result.exit_code == 0, result.output
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cage-eval-hits")["Contents"]]
    assert len(keys) == 16 and all(k.startswith("cage-eval/5e1f0c2a9b7d4e33/") for k in keys)
    question = next(iter(fake.hits.values()))["Question"]
    assert f"{s3_endpoint}/cage-eval-hits/cage-eval/5e1f0c2a9b7d4e33/" in question.replace("&amp;", "&")
    assert "X-Amz-Expires=259800" in question          # lifetime 3d + duration 10m
    blob = tree_bytes(run_dir)
    assert DUMMY_SECRET_KEY.encode() not in blob


def test_no_credentials_at_all(tmp_path, run_dir, fake, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--endpoint-url", fake.url)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: MTurk GetAccountBalance: no AWS credentials found")
    assert not (run_dir / "ledger.sqlite").exists()


def test_mturk_region_is_us_east_1(aws_env, run_dir):
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--region", "eu-west-1")
    assert result.exit_code == 1
    assert result.stderr == ("Error: --region 'eu-west-1': the MTurk requester API exists only in "
                             "us-east-1; drop --region\n")


def test_ten_plus_assignments_when_allowed_show_the_doubled_fee(run_dir):
    result = invoke("publish", run_dir, "--dry-run", "--reward", "0.10", "--assignments", "10",
                    "--allow-10-plus", "--lifetime", "1d", "--duration", "5m", "--auto-approve", "0")
    assert result.exit_code == 0, result.output
    assert "$0.10 x 10 assignments x 8 HITs x (1 + 40% fee) = $11.20" in result.stdout


def test_texts_file_sets_the_hit_wording(aws_env, run_dir, fake, tmp_path):
    texts = tmp_path / "texts.json"
    texts.write_text(
        '{"title": "Which sketch looks hand-drawn?", "description": "Pick the more natural sketch.",'
        ' "keywords": "sketch, realism", "question": "Which sketch looks more hand-drawn?",'
        ' "instructions": "Go with your first impression.", "top_label": "Upper sketch",'
        ' "bottom_label": "Lower sketch"}'
    )
    result = invoke("publish", run_dir, *PUBLISH_OPTIONS, "--texts", texts, "--endpoint-url",
                    fake.url)
    assert result.exit_code == 0, result.output
    (hit_type,) = fake.hit_types.values()
    assert hit_type["Title"] == "Which sketch looks hand-drawn?"
    questions = [h["Question"] for h in fake.hits.values()]
    assert len(questions) == 8
    assert all("Which sketch looks more hand-drawn?" in q and "Upper sketch" in q for q in questions)
