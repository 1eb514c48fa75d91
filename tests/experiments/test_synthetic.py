"""The synthetic experiment as ground truth: planted parameters, the geometric prediction, the
label-balance control, the call rules' false-arrow rate, and every number recomputed from files."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cage.config.experiment import config_from_dict
from cage.engine.effects import decide, delta_tau, empirical_p_value
from cage.engine.rules import centred_p_value
from cage.experiments import synthetic
from cage.run.pipeline import run_cage, run_experiment
from cage_eval import runs


def _raw(seed=0, *, dim=16, n=1500, cos=0.5, rates=(0.5, 0.5), mechanism="none", pairs=None,
         **cage):
    body = {"pairs": pairs or [["m1", "m2"]], "alphas": [0.5, 1.0, 1.5], "alpha": 1.0, "k": 1500,
            "n_null": 20, "k_null_observation": 800, "mmd_n": 40, "mmd_permutations": 5,
            "baselines": False, "correction": "none",
            "outcomes": ["latent", "observation"]}
    body.update(cage)
    return {"experiment": {"name": "syn", "kind": "synthetic", "seed": seed}, "cage": body,
            "synthetic": {"dim": dim, "n": n, "cos": cos, "positive_rate": list(rates),
                          "mechanism": mechanism}}


#: Exchangeable attributes, no mechanism, m2 rare: the paper's rule reads an arrow m2 -> m1.
STRESS = {"seed": 0, "dim": 64, "n": 2000, "cos": 0.6, "rates": (0.5, 0.1), "k": 3000,
          "n_null": 40, "k_null_observation": 1000}


def _run(raw):
    config = config_from_dict(raw)
    return run_cage(synthetic.setup(config, cache_dir=None), config)


def test_the_model_recovers_its_planted_parameters():
    config = config_from_dict(_raw(dim=24, n=20_000, cos=0.6, rates=(0.3, 0.7)))
    setup = synthetic.setup(config, cache_dir=None)
    assert setup.attributes["m1"].mean() == pytest.approx(0.3, abs=0.015)
    assert setup.attributes["m2"].mean() == pytest.approx(0.7, abs=0.015)
    model = setup.generator.model
    a = model.directions
    assert a @ a.T == pytest.approx(np.array([[1, 0.6], [0.6, 1]]), abs=1e-12)
    # Without a mechanism the labels are probit in a_i . z: the logistic normals align with a_i.
    result = run_cage(setup, config)
    h1, h2 = result.classifiers["m1"].normal_, result.classifiers["m2"].normal_
    assert h1 @ a[0] > 0.97 and h2 @ a[1] > 0.97
    assert h1 @ h2 == pytest.approx(0.6, abs=0.05)
    # The observation classifier is the exact posterior: its mean is the positive rate.
    probs = setup.observation_classifier(setup.generator.decode(setup.generator.sample(50_000, 1)))
    assert probs["m1"].mean() == pytest.approx(0.3, abs=0.01)


def test_a_planted_mechanism_moves_the_effect_and_not_the_cause():
    config = config_from_dict(_raw(dim=8, n=40_000, cos=0.0, mechanism="m1->m2"))
    setup = synthetic.setup(config, cache_dir=None)
    m1, m2 = setup.attributes["m1"], setup.attributes["m2"]
    assert m2[m1 == 1].mean() - m2[m1 == 0].mean() > 0.3
    free = synthetic.setup(config_from_dict(_raw(dim=8, n=40_000, cos=0.0)), cache_dir=None)
    f1, f2 = free.attributes["m1"], free.attributes["m2"]
    assert abs(f2[f1 == 1].mean() - f2[f1 == 0].mean()) < 0.02
    # Decoding: moving z along the cause's direction changes the effect's score, not vice versa.
    gen = setup.generator
    a = gen.model.directions
    z = gen.sample(4000, 3)
    import torch

    base = gen.decode(z).numpy()
    along_cause = gen.decode(z + torch.as_tensor(a[0], dtype=torch.float32)).numpy()
    along_effect = gen.decode(z + torch.as_tensor(a[1], dtype=torch.float32)).numpy()
    assert (along_cause[:, 1] - base[:, 1]).mean() > 0.3
    assert np.abs(along_effect[:, 0] - base[:, 0]).max() < 1e-5


def test_geometric_prediction_matches_the_observed_eq8_gates():
    result = _run(_raw(dim=16, n=3000, cos=0.5, rates=(0.5, 0.25), k=1_000_000, n_null=5,
                       outcomes=["latent"], alphas=[1.0], nulls=["random"], null="random"))
    (d,) = result.directions
    # Monte Carlo standard error of each GATE at k = 10^6 is about 2e-4.
    assert d.gate_12 == pytest.approx(d.gate_12_geometric, abs=1e-3)
    assert d.gate_21 == pytest.approx(d.gate_21_geometric, abs=1e-3)
    assert d.delta_tau == pytest.approx(d.delta_tau_geometric, abs=1.5e-3)


def test_the_threshold_control_flips_the_sign_where_balance_drives_delta_tau():
    """Exchangeable attributes, no mechanism, m2 rare: the paper's rule reads an arrow; moving the
    thresholds so that m1 is the rare one flips delta tau, so the controlled rule says '?'."""
    result = _run(_raw(**STRESS))
    for d in result.directions:
        assert d.direction_paper == "<-", d.outcome  # the rare attribute "causes" the common one
        assert np.sign(d.delta_tau_m1_rare) == -np.sign(d.delta_tau_m2_rare) != 0
        assert d.direction == d.direction_controlled == "?"
        assert "balance-driven" in d.reason.split("+")
        assert not d.balance_sign_stable
    latent = result.direction_for("m1", "m2", "latent")
    assert "geometry-only" in latent.reason


@pytest.mark.parametrize("scenario", [
    {"dim": 64, "cos": 0.6, "rates": (0.5, 0.1)},   # associated, exchangeable, one label rare
    {"dim": 16, "cos": 0.0, "rates": (0.2, 0.3)},   # independent, both imbalanced
])
def test_the_controlled_rule_false_arrow_rate_is_at_most_5_percent(scenario):
    seeds = range(20)
    controlled = {"latent": 0, "observation": 0}
    paper = 0
    for seed in seeds:
        for d in _run(_raw(seed=seed, **scenario)).directions:
            controlled[d.outcome] += d.direction_controlled in ("->", "<-")
            paper += d.direction_paper in ("->", "<-")
    # No mechanism: every arrow is false. At most 1 in 20 per variant.
    assert controlled["latent"] == 0  # eq. 8 is geometry: never an arrow
    assert controlled["observation"] <= 1
    if scenario["cos"] > 0:
        assert paper >= 20  # the scenario does stress the paper's rule (40 calls in all)


def _csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _recompute_from_files(out, n_null: int, level: float = 0.05) -> list[dict[str, str]]:
    """Recompute every p-value, the paper's call and sign stability of every directions.csv row
    from null_draws.csv and alpha_sweep.csv; return the rows."""
    nulls = _csv(out / runs.NULL_DRAWS)
    sweep = _csv(out / runs.ALPHA_SWEEP)
    rows = _csv(out / runs.DIRECTIONS)
    assert {r["outcome"] for r in rows} == {"latent", "observation"}
    for row in rows:
        mine = [r for r in nulls if r["outcome"] == row["outcome"]]
        # The statistics the nulls are compared with: the GATEs on the nulls' latents (eq. 9
        # uses the first n_null_k prior latents; eq. 8 all of them).
        obs12, obs21 = float(row["gate_12_null_k"]), float(row["gate_21_null_k"])
        if row["outcome"] == "latent":
            assert (obs12, obs21) == (float(row["gate_12"]), float(row["gate_21"]))
        dt = abs(obs12) - abs(obs21)
        for kind in ("permutation", "random", "rotation"):
            draws = [r for r in mine if r["null"] == kind]
            assert len(draws) == n_null
            n12 = np.array([float(r["gate_12"]) for r in draws])
            n21 = np.array([float(r["gate_21"]) for r in draws])
            ndt = np.array([float(r["delta_tau"]) for r in draws])
            np.testing.assert_allclose(ndt, delta_tau(n12, n21), atol=1e-9)
            assert float(row[f"p_gate_12_{kind}"]) == pytest.approx(empirical_p_value(n12, obs12))
            assert float(row[f"p_gate_21_{kind}"]) == pytest.approx(empirical_p_value(n21, obs21))
            if kind != "rotation":
                assert float(row[f"p_delta_tau_{kind}"]) == pytest.approx(empirical_p_value(ndt, dt))
            if kind == "permutation":
                assert float(row["p_delta_tau_centred"]) == pytest.approx(centred_p_value(ndt, dt))
            if kind == "rotation":
                assert float(row["p_delta_tau_rotation"]) == pytest.approx(centred_p_value(ndt, dt))
        p12, p21, pdt = (float(row[c]) for c in ("p_gate_12", "p_gate_21", "p_delta_tau"))
        assert (p12, p21, pdt) == tuple(float(row[f"{c}_permutation"])
                                        for c in ("p_gate_12", "p_gate_21", "p_delta_tau"))
        assert decide(float(row["delta_tau"]), p12, p21, pdt, level) == row["direction_paper"]
        dts = [float(r["delta_tau"]) for r in sweep if r["outcome"] == row["outcome"]]
        for r in sweep:
            if r["outcome"] == row["outcome"]:
                assert float(r["delta_tau"]) == pytest.approx(
                    abs(float(r["gate_12"])) - abs(float(r["gate_21"])), abs=1e-9)
        stable = all(np.sign(x) == np.sign(float(row["delta_tau"])) for x in dts)
        assert (row["sign_stable"] == "yes") == stable
    return rows


@pytest.mark.parametrize("pair, arrow", [(["m1", "m2"], "<-"), (["m2", "m1"], "->")])
def test_every_number_of_a_planted_asymmetry_recomputes_from_the_files(tmp_path, pair, arrow):
    """The paper's rule on a planted imbalance calls an arrow; reversing the pair reverses it.
    Every p-value, the call and sign stability are recomputed from null_draws.csv and
    alpha_sweep.csv."""
    raw = _raw(**STRESS, pairs=[pair], rule="paper")
    out = tmp_path / "run"
    run_experiment(config_from_dict(raw), out)
    for row in _recompute_from_files(out, STRESS["n_null"]):
        assert row["direction"] == row["direction_paper"] == arrow
        assert (row["cause"], row["effect"]) == ((pair[1], pair[0]) if arrow == "<-" else tuple(pair))
        assert row["direction_controlled"] == "?"


def test_numbers_that_tell_the_two_gates_apart_recompute_from_the_files(tmp_path):
    """Where the two GATEs' p-values differ and delta tau changes sign over alpha (independent
    attributes), so that swapping p_gate_12 and p_gate_21, or reporting every sign as stable,
    cannot pass unnoticed."""
    raw = _raw(seed=3, dim=16, cos=0.2, rates=(0.5, 0.5), alphas=[0.25, 0.5, 1.0, 1.5, 2.0])
    out = tmp_path / "run"
    run_experiment(config_from_dict(raw), out)
    rows = _recompute_from_files(out, 20)
    assert any(row["p_gate_12"] != row["p_gate_21"] for row in rows)
    assert any(row["p_gate_12_rotation"] != row["p_gate_21_rotation"] for row in rows)
    assert {row["sign_stable"] for row in rows} == {"yes", "no"}
