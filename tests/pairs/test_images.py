"""PNG encoding, opaque names and contact sheets."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from cage.pairs.images import ImageStore, contact_sheet, encode_png, image_name, to_uint8


def digit(seed=0):
    return (np.random.default_rng(seed).random((28, 28)) * 255).astype(np.uint8)


@pytest.mark.parametrize("scale", [1, 3])
def test_png_round_trips_through_pillow(scale):
    img = digit()
    back = np.asarray(Image.open(io.BytesIO(encode_png(img, scale=scale))))
    assert back.shape == (28 * scale, 28 * scale)
    assert np.array_equal(back[::scale, ::scale], img)


def test_png_bytes_and_names_depend_on_pixels_only():
    a, b = digit(0), digit(0)
    assert encode_png(a) == encode_png(b)
    assert image_name(a) == image_name(b)
    assert image_name(a) != image_name(digit(1))
    assert image_name(a) != image_name(a, scale=2)
    assert re.fullmatch(r"[0-9a-f]{20}\.png", image_name(a))
    png = encode_png(a)
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"tIME"):
        assert chunk not in png


def test_to_uint8_rounds_and_clips():
    assert to_uint8(np.array([-0.1, 0.0, 0.5, 1.0, 1.2])).tolist() == [0, 0, 128, 255, 255]


def test_encode_rejects_non_uint8():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4)))


def test_store_writes_each_image_once(tmp_path):
    with ImageStore(tmp_path / "img") as store:
        names = [store.add(digit(0)), store.add(digit(1)), store.add(digit(0))]
    assert names[0] == names[2] != names[1]
    files = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert files == sorted(set(names))
    back = np.asarray(Image.open(tmp_path / "img" / names[1]))
    assert np.array_equal(back, digit(1))


def test_store_reports_write_failures(tmp_path):
    store = ImageStore(tmp_path / "img")
    (tmp_path / "img").rmdir()
    (tmp_path / "img").write_text("not a directory")
    store.add(digit(0))
    with pytest.raises(OSError):
        store.close()


def test_contact_sheet_lays_out_labelled_rows():
    rows = [[digit(k), digit(k + 1), digit(k + 2)] for k in range(5)]
    png = contact_sheet(rows, column_titles=["source", "a changed", "b changed"],
                        row_labels=[f"p{k}" for k in range(5)], title="a->b same-source", scale=2)
    sheet = np.asarray(Image.open(io.BytesIO(png)))
    assert sheet.ndim == 2 and sheet.shape[0] > 3 * 56 and sheet.shape[1] > 2 * 3 * 56
    # The first image of the first row is pasted verbatim (enlarged twice) somewhere on the sheet.
    big = np.repeat(np.repeat(digit(0), 2, axis=0), 2, axis=1)
    ys, xs = np.nonzero(sheet == big[0, 0])
    assert any(np.array_equal(sheet[y:y + 56, x:x + 56], big) for y, x in zip(ys, xs, strict=True))
    assert png == contact_sheet(rows, column_titles=["source", "a changed", "b changed"],
                                row_labels=[f"p{k}" for k in range(5)], title="a->b same-source",
                                scale=2)


def test_discard_deletes_only_what_no_other_add_holds(tmp_path):
    a, b = digit(0), digit(1)
    with ImageStore(tmp_path / "img", batch=1) as store:
        name_a = store.add(a)
        store.add(a)  # held twice
        name_b = store.add(b)
        store.discard(name_a)  # still held once: stays
        store.discard(name_b)  # written (batch=1), then deleted in order
        assert store.written == {name_a}
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == [name_a]
    with ImageStore(tmp_path / "img2") as store:
        name_b = store.add(b)
        store.discard(name_b)  # still queued: never written
        assert store.add(b) == name_b  # and back again
    assert [p.name for p in (tmp_path / "img2").iterdir()] == [name_b]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "img2" / name_b)), b)


def test_png_of_a_digit_is_small_and_exact():
    # Run-length deflate: a mostly black 28x28 digit compresses to well under its 812 raw bytes.
    img = np.zeros((28, 28), dtype=np.uint8)
    img[6:22, 12:16] = 200
    png = encode_png(img)
    assert len(png) < 200
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), img)
