"""Counterfactual pairs on a planted generator whose attributes are known in closed form.

The generator draws a 28x28 image whose left half has brightness sigmoid(2 z0) and right half
sigmoid(2 z1); attribute ``a`` is "left half bright" and ``b`` "right half bright". Its latent
classifiers are exact (logit_a = 4 z0, logit_b = 4 z1) and the observation classifier reads the
pixels, so every check can be verified by hand.
"""

import csv
import re

import numpy as np
import pytest
import torch

from cage.pairs.images import ImageStore
from cage.pairs.make import COMBINATIONS, LinearAttribute, PairConfig, PairMaker, number_pairs
from cage_eval.errors import ConfigError
from cage_eval.files import atomic_write_csv
from cage_eval.runs import PAIRS_COLUMNS


class HalvesGenerator:
    latent_dim = 2

    def decode(self, z):
        z = torch.as_tensor(z, dtype=torch.float32)
        out = torch.zeros(z.shape[0], 1, 28, 28)
        out[:, 0, :, :14] = torch.sigmoid(2 * z[:, :1, None])
        out[:, 0, :, 14:] = torch.sigmoid(2 * z[:, 1:2, None])
        return out


def halves_psi(x, blocked_right_above=None, cut_a=0.5):
    left = x[:, 0, :, :14].mean(dim=(1, 2)).double().numpy()
    right = x[:, 0, :, 14:].mean(dim=(1, 2)).double().numpy()
    p_a = 1 / (1 + np.exp(-40 * (left - cut_a)))
    if blocked_right_above is not None:
        p_a = np.where(right > blocked_right_above, 0.5 - 0.5 * (2 * p_a - 1), p_a)
    return {"a": p_a, "b": 1 / (1 + np.exp(-40 * (right - 0.5)))}


A = LinearAttribute("a", np.array([4.0, 0.0]), 0.0)
B = LinearAttribute("b", np.array([0.0, 4.0]), 0.0)


def make(tmp_path, n=200, psi=halves_psi, **cfg):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 2)).astype(np.float32)
    images = np.round(HalvesGenerator().decode(z).numpy()[:, 0] * 255).astype(np.uint8)
    labels = {"a": (z[:, 0] > 0).astype(np.int64), "b": (z[:, 1] > 0).astype(np.int64)}
    store = ImageStore(tmp_path / "images")
    maker = PairMaker(HalvesGenerator(), z, images, labels, np.arange(n) + 1000, psi, store,
                      PairConfig(**cfg))
    return maker, z, labels, np.random.default_rng(1).permutation(n)


def test_alpha_reaches_the_target_probability_in_closed_form(tmp_path):
    maker, z, labels, pool = make(tmp_path, target_probability=0.9, alpha_min=0.01)
    idx = pool[:20]
    targets = 1 - labels["a"][idx]
    m = maker.manipulate(idx, A, targets)
    sign = np.where(targets == 1, 1, -1)
    # logit after = 4 (z0 + s alpha) must be s * logit(0.9) (or more when alpha_min binds).
    after = 4 * (z[idx, 0] + sign * m.alpha)
    assert np.allclose(sign * after, np.maximum(np.log(9), sign * 4 * z[idx, 0] + 4 * 0.01),
                       atol=1e-5)
    assert m.ok.all() and (m.tries == 1).all() and np.array_equal(m.target, targets)
    maker.store.close()


def test_same_source_flips_each_attribute_of_one_source(tmp_path):
    maker, z, labels, pool = make(tmp_path)
    s = maker.same_source(A, B, 30, pool)
    maker.store.close()
    assert len(s.rows) == 30 and s.stats["replaced_sources"] == 0
    for row in s.rows:
        src = row["source_cause_id"] - 1000
        assert row["source_effect_id"] == row["source_cause_id"]
        assert row["image_source_cause"] == row["image_source_effect"]
        assert row["target_cause"] == 1 - labels["a"][src]
        assert row["target_effect"] == 1 - labels["b"][src]
        assert float(row["check_cause"]) >= 0.5 and float(row["check_effect"]) >= 0.5
        assert row["ok_cause"] == row["ok_effect"] == 1 and row["attempts"] == 1
    # The sheet rows hold source, cause-changed and effect-changed images.
    assert len(s.sheet_rows[0]) == 3
    srcs = [r["source_cause_id"] for r in s.rows]
    assert len(set(srcs)) == 30


def test_same_destination_reaches_one_combination_from_two_sources(tmp_path):
    maker, z, labels, pool = make(tmp_path)
    s = maker.same_destination(A, B, 24, pool)
    maker.store.close()
    used = set()
    for j, row in enumerate(s.rows):
        c, e = COMBINATIONS[j % 4]
        ia, ib = row["source_cause_id"] - 1000, row["source_effect_id"] - 1000
        assert ia != ib
        assert (labels["a"][ia], labels["b"][ia]) == (1 - c, e)
        assert (labels["a"][ib], labels["b"][ib]) == (c, 1 - e)
        assert (row["target_cause"], row["target_effect"]) == (c, e)
        used |= {ia, ib}
    assert len(used) == 48  # no source reused


def test_failures_are_replaced_and_recorded(tmp_path):
    # psi reads attribute a backwards whenever the right half is brighter than 0.8: a source with
    # a bright right half can never have a changed (its right half does not move), so it must be
    # replaced.
    def psi(x):
        return halves_psi(x, blocked_right_above=0.8)

    maker, z, labels, pool = make(tmp_path, psi=psi, alpha_steps=2, alpha_growth=3.0)
    s = maker.same_source(A, B, 40, pool)
    maker.store.close()
    assert s.stats["replaced_sources"] > 0
    assert s.stats["success_after_escalation"] < 1.0
    assert max(r["attempts"] for r in s.rows) > 1
    assert all(r["ok_cause"] == 1 and r["ok_effect"] == 1 for r in s.rows)
    assert s.stats["source_images_tried"] == 40 + s.stats["replaced_sources"]


def test_escalation_raises_alpha_when_the_first_is_not_enough(tmp_path):
    # Aim the latent classifier only at p = 0.55 (left half at about 0.52) while psi calls a = 1
    # only above 0.6: pushes towards a = 1 fail at the first alpha and pass after escalation.
    def psi(x):
        return halves_psi(x, cut_a=0.6)

    maker, z, labels, pool = make(tmp_path, psi=psi, target_probability=0.55, alpha_min=0.01)
    idx = pool[:50]
    targets = 1 - labels["a"][idx]
    m = maker.manipulate(idx, A, targets)
    maker.store.close()
    assert m.ok.all()
    assert (m.tries[targets == 1] > 1).all() and (m.tries[targets == 0] == 1).all()
    first = (np.log(0.55 / 0.45) - 4 * z[idx, 0]) / 4
    assert np.allclose(m.alpha[targets == 1], np.maximum(0.01, first[targets == 1]) * 1.5 ** (
        m.tries[targets == 1] - 1))


def test_too_many_pairs_is_a_config_error(tmp_path):
    maker, z, labels, pool = make(tmp_path, n=40)
    with pytest.raises(ConfigError, match="n_same_source = 41: only 40"):
        maker.same_source(A, B, 41, pool)
    with pytest.raises(ConfigError, match="n_same_destination = 40: .* needs"):
        maker.same_destination(A, B, 40, pool)
    maker.store.close()


def test_unreachable_target_says_how_many_passed(tmp_path):
    def never(x):
        p = halves_psi(x)
        return {"a": np.full_like(p["a"], 0.5), "b": p["b"]}

    maker, z, labels, pool = make(tmp_path, n=30, psi=never, check_threshold=0.6)
    with pytest.raises(ConfigError, match="only 0 of 5 pairs passed"):
        maker.same_source(A, B, 5, pool)
    maker.store.close()


def test_rows_are_deterministic_and_names_are_opaque(tmp_path):
    outs = []
    for k in range(2):
        maker, z, labels, pool = make(tmp_path / str(k))
        sets = [maker.same_source(A, B, 10, pool), maker.same_destination(A, B, 8, pool)]
        maker.store.close()
        rows = number_pairs(sets)
        atomic_write_csv(tmp_path / f"pairs{k}.csv", rows, PAIRS_COLUMNS)
        outs.append((tmp_path / f"pairs{k}.csv").read_bytes())
        files = sorted(p.name for p in (tmp_path / str(k) / "images").iterdir())
        assert all(re.fullmatch(r"[0-9a-f]{20}\.png", f) for f in files)
        names = {r[c] for r in rows for c in PAIRS_COLUMNS if c.startswith("image_")}
        assert names == set(files)
    assert outs[0] == outs[1]
    rows = list(csv.DictReader(open(tmp_path / "pairs0.csv")))
    assert [r["pair_id"] for r in rows] == [f"p{k:04d}" for k in range(1, 19)]
    assert tuple(rows[0]) == PAIRS_COLUMNS


def test_same_source_takes_back_the_images_of_pairs_whose_effect_failed(tmp_path):
    # psi reads b backwards when the left half is brighter than 0.8: those sources pass the cause
    # check (their images are written early) but never the effect check, so they are replaced and
    # their source and cause images must be deleted again.
    def psi(x):
        p = halves_psi(x)
        left = x[:, 0, :, :14].mean(dim=(1, 2)).double().numpy()
        return {"a": p["a"], "b": np.where(left > 0.8, 1 - p["b"], p["b"])}

    maker, z, labels, pool = make(tmp_path, psi=psi, alpha_steps=1, batch=16)
    s = maker.same_source(A, B, 40, pool)
    maker.store.close()
    assert s.stats["replaced_sources"] > 0
    names = {r[c] for r in s.rows for c in PAIRS_COLUMNS if c.startswith("image_")}
    assert {p.name for p in (tmp_path / "images").iterdir()} == names == maker.store.written


def test_overlapped_same_source_matches_plain_manipulations(tmp_path):
    # same_source checks one batch on a helper thread while the next is decoded; its rows must be
    # exactly what manipulate() gives for the same sources, one batch at a time.
    maker, z, labels, pool = make(tmp_path, batch=7, target_probability=0.7)
    s = maker.same_source(A, B, 30, pool)
    maker.store.close()
    idx = np.array([r["source_cause_id"] - 1000 for r in s.rows])
    mc = maker.manipulate(idx, A, 1 - labels["a"][idx])
    me = maker.manipulate(idx, B, 1 - labels["b"][idx])
    assert [r["alpha_cause"] for r in s.rows] == [f"{x:.4f}" for x in mc.alpha]
    assert [r["check_effect"] for r in s.rows] == [f"{x:.4f}" for x in me.check]
