"""S3ImageHost against a real S3-protocol server on loopback (moto's server mode), over HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request

import boto3
import pytest
from botocore.config import Config
from crowd_fixtures import make_run_dir

from cage_eval import runs
from cage_eval.errors import BackendError, ConfigError, RunDirError
from mturk.images_s3 import MAX_PRESIGN_SECONDS, S3ImageHost

BUCKET = "cage-eval-test-bucket"


@pytest.fixture()
def s3(s3_endpoint):
    client = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        # No signature_version here on purpose: botocore would presign with SigV2 by default.
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=BUCKET)
    yield client
    for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=obj["Key"])
    client.delete_bucket(Bucket=BUCKET)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("s3") / "run", pairs_per_cell=1)


def _names(run, n=3):
    return sorted(p.name for p in (run / runs.IMAGES_DIR).iterdir())[:n]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_upload_then_presigned_get_returns_the_bytes(s3, run):
    host = S3ImageHost(s3, BUCKET, run, prefix="hits/", expires_in=3600)
    names = _names(run)
    assert host.upload(names) == len(names)
    for name in names:
        url = host.url(name)
        assert url.startswith("http://127.0.0.1:")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
        status, body = _get(url)
        assert status == 200
        assert body == (run / runs.IMAGES_DIR / name).read_bytes()
        assert s3.head_object(Bucket=BUCKET, Key=f"hits/{name}")["ContentType"] == "image/png"


def test_objects_are_private_unsigned_get_refused(s3, s3_endpoint, run):
    host = S3ImageHost(s3, BUCKET, run, prefix="hits/", expires_in=600)
    (name,) = _names(run, 1)
    host.upload([name])
    status, _ = _get(f"{s3_endpoint}/{BUCKET}/hits/{name}")
    assert status == 403
    grants = s3.get_object_acl(Bucket=BUCKET, Key=f"hits/{name}")["Grants"]
    assert all("URI" not in g["Grantee"] for g in grants)  # no AllUsers / AuthenticatedUsers grant


def test_upload_is_idempotent_and_repairs_changed_objects(s3, run):
    host = S3ImageHost(s3, BUCKET, run, prefix="", expires_in=600)
    names = _names(run, 4)
    assert host.upload(names[:2]) == 2
    assert host.upload(names) == 2  # only the two still missing
    assert host.upload(names) == 0
    s3.put_object(Bucket=BUCKET, Key=names[0], Body=b"not the image")
    assert host.upload(names) == 1
    assert _get(host.url(names[0]))[1] == (run / runs.IMAGES_DIR / names[0]).read_bytes()


def test_lifetime_beyond_sigv4_maximum_is_refused(s3, run):
    S3ImageHost(s3, BUCKET, run, expires_in=MAX_PRESIGN_SECONDS)
    with pytest.raises(ConfigError, match="7 days.*re-sign"):
        S3ImageHost(s3, BUCKET, run, expires_in=MAX_PRESIGN_SECONDS + 1)
    with pytest.raises(ConfigError, match="positive"):
        S3ImageHost(s3, BUCKET, run, expires_in=0)


def test_missing_bucket_and_missing_file_are_clear_errors(s3, run):
    with pytest.raises(ConfigError, match="--s3-bucket"):
        S3ImageHost(s3, "", run, expires_in=60)
    host = S3ImageHost(s3, "no-such-bucket-here", run, expires_in=60)
    with pytest.raises(BackendError, match="no-such-bucket-here.*does not exist"):
        host.upload(_names(run, 1))
    good = S3ImageHost(s3, BUCKET, run, expires_in=60)
    with pytest.raises(RunDirError, match="missing"):
        good.upload(["0000000000000000.png"])
    with pytest.raises(RunDirError, match="plain file name"):
        good.url("../manifest.json")
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0  # nothing sent


def test_bucket_in_another_region_is_refused_before_upload(s3_endpoint, run):
    east = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    west = boto3.client("s3", endpoint_url=s3_endpoint, region_name="eu-west-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    west.create_bucket(Bucket="cage-eval-west",
                       CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    try:
        with pytest.raises(ConfigError, match="region eu-west-1.*--region eu-west-1"):
            S3ImageHost(east, "cage-eval-west", run, expires_in=60).upload(_names(run, 1))
        host = S3ImageHost(west, "cage-eval-west", run, expires_in=60)
        assert host.upload(_names(run, 1)) == 1
        assert "X-Amz-Credential=testing%2F" in host.url(_names(run, 1)[0])
        assert "%2Feu-west-1%2Fs3%2Faws4_request" in host.url(_names(run, 1)[0])
    finally:
        for obj in west.list_objects_v2(Bucket="cage-eval-west").get("Contents", []):
            west.delete_object(Bucket="cage-eval-west", Key=obj["Key"])
        west.delete_bucket(Bucket="cage-eval-west")
