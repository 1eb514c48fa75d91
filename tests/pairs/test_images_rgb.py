"""Colour images of any size through the PNG encoder, the image store, contact sheets and pair
making; greyscale names and encodings are what they were before colour was added."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import make_generator

from cage.pairs.images import ImageStore, contact_sheet, encode_png, image_name
from cage.pairs.make import LinearAttribute, PairConfig, PairMaker

pytestmark = pytest.mark.usefixtures("one_thread")


def colour(seed=0, shape=(12, 20, 3)):
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


def test_greyscale_names_are_unchanged():
    img = (np.arange(28 * 28).reshape(28, 28) * 7 % 256).astype(np.uint8)
    assert image_name(img) == "2aaf73a48a7ad41a82de.png"  # the value before colour support
    assert image_name(img, scale=2) == "f2e3cbeb35b2ccc34ae9.png"
    assert encode_png(img)[16:26] == b"\x00\x00\x00\x1c\x00\x00\x00\x1c\x08\x00"  # 28x28, grey


@pytest.mark.parametrize("scale", [1, 2])
def test_rgb_png_round_trips(scale):
    img = colour()
    with Image.open(io.BytesIO(encode_png(img, scale=scale))) as im:
        assert im.mode == "RGB" and im.size == (20 * scale, 12 * scale)
        assert np.array_equal(np.asarray(im)[::scale, ::scale], img)
    assert image_name(img) != image_name(img.reshape(12, 60))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        encode_png(np.zeros((4, 4, 2), dtype=np.uint8))


def test_store_writes_colour_and_grey_side_by_side(tmp_path):
    grey = colour(1, (8, 8))
    with ImageStore(tmp_path / "img", batch=2) as store:
        names = [store.add(colour(0)), store.add(grey), store.add(colour(2)), store.add(colour(0))]
    assert names[0] == names[3] and len(set(names)) == 3
    with Image.open(tmp_path / "img" / names[2]) as im:
        assert np.array_equal(np.asarray(im), colour(2))
    with Image.open(tmp_path / "img" / names[1]) as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), grey)


def test_colour_contact_sheet():
    rows = [[colour(i), colour(i + 1)] for i in range(3)]
    png = contact_sheet(rows, column_titles=["a", "b"], row_labels=["x", "y", "z"], title="t",
                        scale=2)
    with Image.open(io.BytesIO(png)) as im:
        assert im.mode == "RGB"


def test_pairs_of_colour_images(tmp_path):
    gen = make_generator(latent_dim=4, size=8)
    z = gen.sample(40, 0).numpy()
    with torch.no_grad():
        x = gen.decode(torch.as_tensor(z)).numpy()
    pool = np.rint(x.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    red = x[:, 0].mean((1, 2)) - x[:, 2].mean((1, 2))
    labels = {"a": (z[:, 0] > 0).astype(int), "b": (red > np.median(red)).astype(int)}
    psi_seen = []

    def psi(images):
        psi_seen.append(tuple(images.shape[1:]))
        r = images[:, 0].mean((1, 2)) - images[:, 2].mean((1, 2))
        return {"a": np.full(images.shape[0], 0.5), "b": torch.sigmoid(400 * (r - float(np.median(
            red)))).numpy()}

    with ImageStore(tmp_path / "img") as store:
        maker = PairMaker(gen, z, pool, labels, np.arange(40), psi, store,
                          PairConfig(alpha_steps=6, alpha_growth=2.0, check_threshold=0.5))
        coef = np.linalg.lstsq(np.c_[z, np.ones(40)], red, rcond=None)[0]
        b = LinearAttribute("b", coef[:4] * 50, float(coef[4] * 50))
        a = LinearAttribute("a", np.array([1.0, 0, 0, 0]), 0.0)
        result = maker.same_source(a, b, 3, np.arange(40))
    assert psi_seen and all(s == (3, 8, 8) for s in psi_seen)
    assert len(result.rows) == 3
    assert all(img.shape == (8, 8, 3) for row in result.sheet_rows for img in row)
    for row in result.rows:
        with Image.open(tmp_path / "img" / row["image_effect"]) as im:
            assert im.mode == "RGB" and im.size == (8, 8)
