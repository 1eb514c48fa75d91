"""Images before they reach a page or a bucket: regular files of the run, well-formed PNGs of the
run's size, named by their content; and attention images indistinguishable from pair images by
any byte-level feature."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir, png_bytes, write_png
from fake_mturk import FakeMTurk
from mturk_helpers import PUBLISH_OPTIONS
from scipy.stats import binomtest, mannwhitneyu

from cage.pairs import images as cage_images
from cage.pairs.images import encode_png, image_name
from cage_eval.cli import cli
from cage_eval.errors import RunDirError
from hitgen import hosting
from hitgen.hosting import DataUriHost, UrlPrefixHost
from hitgen.items import build_hit_items, plan_hit_items, read_hit_items

SECRET = b"[default]\naws_secret_access_key = cageEvalLeakCanary0123456789\n"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def run(tmp_path):
    """A run whose HIT items are built (so every shown image is named in hit_items.csv)."""
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    assert invoke("hits", run, "--no-preview").exit_code == 0
    return run


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "credentials"
    path.write_bytes(SECRET)
    return path


def _shown(run: Path) -> str:
    return read_hit_items(run)[0].image_top


def _assert_no_leak(root: Path) -> None:
    """No file the commands wrote (the planted link or copy aside) holds the secret."""
    blob = b"".join(p.read_bytes() for p in sorted(root.rglob("*"))
                    if p.is_file() and not p.is_symlink() and p.parent.name != "images")
    assert b"cageEvalLeakCanary" not in blob
    assert base64.b64encode(SECRET)[:24] not in blob


# --------------------------------------------------------------------------- what is refused


def test_a_symlinked_image_is_refused_by_hits_and_nothing_leaks(run, secret):
    name = _shown(run)
    (run / "images" / name).unlink()
    (run / "images" / name).symlink_to(secret)
    result = invoke("hits", run)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {run / 'images' / name}: not a regular file of the "
                                    "run (")
    assert "a symbolic link is refused" in result.output and result.output.count("\n") == 1
    _assert_no_leak(run)


def test_a_symlinked_image_never_reaches_mturk(aws_env, run, secret):
    name = _shown(run)
    (run / "images" / name).unlink()
    (run / "images" / name).symlink_to(secret)
    with FakeMTurk(max_lifetime_s=60) as server:
        result = invoke("publish", run, *PUBLISH_OPTIONS, "--endpoint-url", server.url)
        assert result.exit_code == 1, result.output
        assert f"Error: {run / 'images' / name}: not a regular file" in result.output
        assert server.create_calls == 0
        assert not any(b"cageEvalLeakCanary" in h["Question"].encode() or
                       base64.b64encode(SECRET)[:24].decode() in h["Question"]
                       for h in server.hits.values())
    _assert_no_leak(run)


def test_export_batch_refuses_a_symlinked_image(run, secret, tmp_path):
    name = _shown(run)
    (run / "images" / name).unlink()
    (run / "images" / name).symlink_to(secret)
    for extra in ([], ["--image-base-url", "https://example.org/hits"]):
        result = invoke("export-batch", run, "--out", tmp_path / "batch", *extra)
        assert result.exit_code == 1 and "a symbolic link is refused" in result.output
        assert not (tmp_path / "batch").exists()


def test_a_symlinked_images_folder_is_refused(run, tmp_path):
    (run / "images").rename(tmp_path / "elsewhere")
    (run / "images").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RunDirError, match="not a plain folder of the run"):
        DataUriHost(run).url(_shown(run))


@pytest.mark.parametrize("how", ["hard link", "copied over", "other image"])
def test_a_substituted_file_is_refused(run, secret, how):
    name = _shown(run)
    path = run / "images" / name
    path.unlink()
    if how == "hard link":
        os.link(secret, path)
    elif how == "copied over":
        path.write_bytes(SECRET)
    else:  # a valid PNG, of the right size, from another run
        path.write_bytes(encode_png(np.full((28, 28), 200, dtype=np.uint8)))
    message = "not a PNG" if how != "other image" else "not the hash of the image's content"
    result = invoke("hits", run)
    assert result.exit_code == 1 and message in result.output, result.output
    _assert_no_leak(run)


def test_an_image_of_another_size_is_refused(run):
    items = read_hit_items(run)
    small = write_png(run / "images", np.zeros((14, 14), dtype=np.uint8))
    host = DataUriHost(run)
    host.url(items[0].image_top)
    with pytest.raises(RunDirError, match=r"14x14 image with 1 channel\(s\), but the run's "
                                          r"images are 28x28 with 1"):
        host.url(small)
    linked = UrlPrefixHost(run, "https://example.org")
    linked.url(items[0].image_top)
    with pytest.raises(RunDirError, match="14x14"):
        linked.url(small)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(ihdr: bytes, raw: bytes, extra: bytes = b"") -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("data, message", [
    (b"", "no PNG signature"),
    (encode_png(np.zeros((8, 8), np.uint8))[:-6], "truncated"),
    (encode_png(np.zeros((8, 8), np.uint8)) + b"trailing", "bytes after the IEND"),
    (_png(struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0), bytes(9 * 8),
          _chunk(b"tEXt", b"Comment\x00hi")), "unexpected chunk"),
    (_png(struct.pack(">IIBBBBB", 8, 8, 16, 0, 0, 0, 0), bytes(17 * 8)), "bit depth 16"),
    (_png(struct.pack(">IIBBBBB", 100_000, 1, 8, 0, 0, 0, 0), bytes(100_001)), "outside"),
    # a decompression bomb: far more data than an 8x8 image holds
    (_png(struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0), bytes(5_000_000)), "not the 72"),
], ids=["empty", "truncated", "trailing", "text chunk", "16-bit", "too wide",
        "bomb"])
def test_check_png_refuses_malformed_files(data, message):
    with pytest.raises(ValueError, match=message):
        cage_images.check_png(data, "0" * 20 + ".png")


def test_check_png_accepts_both_content_hash_names():
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    data = encode_png(pixels, scale=2)
    assert cage_images.check_png(data, image_name(pixels, scale=2)).width == 16
    other = png_bytes(pixels)  # another encoder: named by the hash of its bytes
    assert cage_images.check_png(other, hashlib.sha256(other).hexdigest()[:20] + ".png").height == 8
    with pytest.raises(ValueError, match="not the hash"):
        cage_images.check_png(other, image_name(pixels[::-1]))


def test_read_image_refuses_odd_names_and_huge_files(run):
    with pytest.raises(RunDirError, match="not a plain file name"):
        hosting.read_image(run, "../manifest.json")
    big = run / "images" / ("a" * 20 + ".png")
    with open(big, "wb") as fh:
        fh.truncate(9 * 1024 * 1024)
    with pytest.raises(RunDirError, match="over the 8,388,608 an image may have"):
        hosting.read_image(run, big.name)


def test_s3_upload_checks_every_image_before_sending_any(aws_env, run, secret, s3_endpoint):
    import boto3

    from mturk.images_s3 import S3ImageHost

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="hits")
    items = read_hit_items(run)
    (run / "images" / items[-1].image_bottom).unlink()
    (run / "images" / items[-1].image_bottom).symlink_to(secret)
    host = S3ImageHost(s3, "hits", run, prefix="p/", expires_in=3600)
    with pytest.raises(RunDirError, match="a symbolic link is refused"):
        host.upload([n for it in items for n in (it.image_top, it.image_bottom)])
    assert s3.list_objects_v2(Bucket="hits").get("KeyCount", 0) == 0


# --------------------------------------------------------------------------- attention checks


def _idat(data: bytes) -> tuple[list[bytes], bytes, bytes]:
    """(chunk types, IHDR body, first two bytes of the zlib stream)."""
    kinds, pos, ihdr, stream = [], 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        kinds.append(kind)
        ihdr = body if kind == b"IHDR" else ihdr
        stream = stream or (body[:2] if kind == b"IDAT" else b"")
        pos += 12 + length
    return kinds, ihdr, stream


def _auc(x, y) -> float:
    return mannwhitneyu(x, y).statistic / (len(x) * len(y))


@pytest.mark.parametrize("png_scale", [1, 2])
def test_no_byte_level_feature_tells_attention_checks_from_pairs(tmp_path, png_scale):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=25, png_scale=png_scale)
    items = build_hit_items(run, seed=3, attention_rate=1.0)   # 100 pairs, 100 checks
    data = {n: (run / "images" / n).read_bytes() for it in items
            for n in (it.image_top, it.image_bottom)}
    # The same encoder, settings and enlargement: every file is what cage.pairs.images writes for its
    # pixels, with identical chunk layout, IHDR and zlib header.
    layouts = {(tuple(k), h, z) for k, h, z in map(_idat, data.values())}
    assert len(layouts) == 1
    kinds, ihdr, header = layouts.pop()
    assert kinds == (b"IHDR", b"IDAT", b"IEND") and header == b"\x78\x01"
    assert struct.unpack(">II", ihdr[:8]) == (28 * png_scale, 28 * png_scale)
    for name, blob in data.items():
        assert cage_images.check_png(blob, name)
    # File sizes: which image is larger does not reveal the damaged one, and no size feature of
    # an item separates checks from pairs (AUC of the best single feature near 0.5).
    sizes = {n: len(b) for n, b in data.items()}
    att = [it for it in items if it.kind == "attention"]
    pairs = [it for it in items if it.kind == "pair"]
    corrupt_larger = sum(sizes[it.image_bottom if it.expected == "top" else it.image_top]
                         > sizes[it.image_top if it.expected == "top" else it.image_bottom]
                         for it in att)
    assert binomtest(corrupt_larger, len(att)).pvalue > 0.05, corrupt_larger
    for feature in (max, min, lambda a, b: abs(a - b), lambda a, b: a + b, lambda a, b: a - b):
        x = [feature(sizes[it.image_top], sizes[it.image_bottom]) for it in att]
        y = [feature(sizes[it.image_top], sizes[it.image_bottom]) for it in pairs]
        assert 0.33 <= _auc(x, y) <= 0.67


def test_attention_images_are_clearly_damaged(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=5)
    plan = plan_hit_items(run, seed=0, attention_rate=1.0)
    for it in (it for it in plan.items if it.kind == "attention"):
        clean = it.image_top if it.expected == "top" else it.image_bottom
        corrupt = it.image_bottom if it.expected == "top" else it.image_top
        a, b = (_pixels(plan.new_images.get(n) or (run / "images" / n).read_bytes())
                for n in (clean, corrupt))
        assert np.abs(a - b).mean() > 40


def _pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im, dtype=float)
