"""The CAGE pipeline on a small linear-Gaussian experiment kind (cage.run.pipeline)."""

from __future__ import annotations

import csv
import json
import types

import numpy as np
import pytest
import torch

from cage.config.experiment import config_from_dict
from cage.engine.classifiers import fit_attribute_classifier, sigmoid
from cage.experiments import registry
from cage.experiments.base import ExperimentSetup
from cage.generators.base import EncodingGenerator
from cage.run.pipeline import run_cage, run_experiment, stage_seed
from cage.run.tables import direction_rows
from cage_eval import runs
from cage_eval.errors import ConfigError

D = 4
A = np.array([[1.0, 0.3, 0, 0], [0, 1.0, 0.2, 0], [0, 0, 1.0, -0.4], [0.1, 0, 0, 1.0]])


class LinearGenerator:
    """x = A z: a generator whose decode and encode are exact linear maps."""

    latent_dim = D

    def sample(self, n, seed):
        return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))

    def decode(self, z):
        return z @ torch.as_tensor(A.T, dtype=z.dtype)

    def encode(self, x):
        return x @ torch.as_tensor(np.linalg.inv(A).T, dtype=x.dtype)


def _raw(**cage):
    base = {"pairs": [["a", "b"]], "alphas": [0.5, 1.0], "alpha": 1.0, "k": 600, "n_null": 20,
            "mmd_n": 60, "mmd_permutations": 30, "k_null_observation": 300, "baselines": False}
    base.update(cage)
    return {"experiment": {"name": "lin", "kind": "lintest", "seed": 3}, "cage": base}


def _setup(config, *, nan=False, kind="logreg"):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1200, D))
    labels = {"a": (rng.random(1200) < sigmoid(3 * z[:, 0])).astype(int)}
    labels["b"] = (rng.random(1200) < sigmoid(2 * z[:, 0] + 2 * z[:, 1] - labels["a"])).astype(int)
    labels["c"] = (rng.random(1200) < sigmoid(2 * z[:, 2] + z[:, 0])).astype(int)
    # Observation classifiers = latent classifiers composed with the exact encoder, fitted exactly
    # as the pipeline fits them: then eq. 9 must reproduce eq. 8.
    fitted = {}
    for name, y in labels.items():
        clf, _ = fit_attribute_classifier(name, z, y, kind=kind,
                                          seed=stage_seed(config.seed, "split", name))
        fitted[name] = clf
    gen = LinearGenerator()
    if nan:
        z[5, 2] = np.nan

    def observe(x):
        zz = gen.encode(x.to(torch.float64))
        return {name: clf.predict_proba(zz) for name, clf in fitted.items()}

    return ExperimentSetup(generator=gen, data_latents=z, attributes=labels,
                           observation_classifier=observe, info={"note": "linear test kind"},
                           observation_accuracy={"a": 0.9, "b": 0.8},
                           observation_sizes={"a": (900, 300), "b": (900, 300)})


def test_generator_protocol():
    assert isinstance(LinearGenerator(), EncodingGenerator)


@pytest.mark.parametrize("kind", ["logreg", "linsvm"])
def test_observation_outcome_reproduces_latent_outcome_through_a_linear_generator(kind):
    config = config_from_dict(_raw(classifier=kind))
    result = run_cage(_setup(config, kind=kind), config)
    lat = result.direction_for("a", "b", "latent")
    obs = result.direction_for("a", "b", "observation")
    assert abs(lat.gate_12 - obs.gate_12) < 1e-5 and abs(lat.gate_21 - obs.gate_21) < 1e-5
    sweep = {(r["outcome"], r["alpha"]): r for r in result.sweep_rows}
    for alpha in (0.5, 1.0):
        assert abs(sweep[("latent", alpha)]["delta_tau"] - sweep[("observation", alpha)]["delta_tau"]) < 1e-5
    assert lat.direction in ("->", "<-", "⊥", "?")
    assert lat.cos_normals == pytest.approx(result.classifiers["a"].normal_ @ result.classifiers["b"].normal_)
    assert lat.p_values.keys() == {"permutation", "random", "rotation"}
    assert 1 / 21 <= lat.p_gate_12 <= 1


def test_conditional_intervention_projects_out_the_other_pairs_attributes():
    config = config_from_dict(_raw(pairs=[["a", "b"], ["a", "c"]], intervention="conditional",
                                   outcomes=["latent"], nulls=["random"], null="random"))
    result = run_cage(_setup(config), config)
    n = {x: result.classifiers[x].normal_ for x in "abc"}
    u_ab = result.interventions[("a", "b")]
    assert abs(u_ab["a"] @ n["c"]) < 1e-10 and abs(u_ab["b"] @ n["c"]) < 1e-10
    assert abs(result.interventions[("a", "c")]["a"] @ n["b"]) < 1e-10
    nulls = result.null_directions[("a", "b", "a", "random")]
    np.testing.assert_allclose(nulls @ n["c"], 0.0, atol=1e-10)
    np.testing.assert_allclose(np.linalg.norm(nulls, axis=1), 1.0)
    assert [(d.m1, d.m2, d.outcome) for d in result.directions] == [("a", "b", "latent"),
                                                                     ("a", "c", "latent")]


def test_observation_conditional_holds_the_other_attribute_of_the_pair_fixed():
    # The observation classifiers here are the latent classifiers composed with the exact encoder,
    # so moving orthogonally to h_b cannot change P(b): both conditional GATEs are 0 (up to float32
    # decoding), while the plain observation variant (moving along h_a) does move b.
    config = config_from_dict(_raw(outcomes=["observation", "observation_conditional"],
                                   nulls=["random"], null="random"))
    result = run_cage(_setup(config), config)
    obs = result.direction_for("a", "b", "observation")
    cond = result.direction_for("a", "b", "observation_conditional")
    assert abs(obs.gate_12) > 0.05
    assert abs(cond.gate_12) < 1e-5 and abs(cond.gate_21) < 1e-5
    # The null directions are projected the same way: every null GATE vanishes too.
    nulls = [r for r in result.null_rows
             if r["outcome"] == "observation_conditional" and r["null"] == "random"]
    assert len(nulls) == 20 and max(abs(r["gate_12"]) + abs(r["gate_21"]) for r in nulls) < 1e-5
    assert cond.cos_normals == obs.cos_normals
    # The engine still reports the unconditioned direction for the pair's interventions.
    u = result.interventions[("a", "b")]["a"]
    np.testing.assert_allclose(u, result.classifiers["a"].normal_)


def test_decision_rule_in_the_pipeline_needs_a_significant_delta_tau():
    config = config_from_dict(_raw(outcomes=["latent"]))
    result = run_cage(_setup(config), config)
    for d in result.directions:
        if d.direction in ("->", "<-"):
            assert d.p_delta_tau <= config.cage.call_level() and d.delta_tau_significant
            assert min(d.p_gate_12, d.p_gate_21) <= config.cage.call_level()
        elif d.direction == "?":
            assert d.p_delta_tau > config.cage.call_level() or d.delta_tau == 0
        else:
            assert d.direction == "⊥" and min(d.p_gate_12, d.p_gate_21) > config.cage.call_level()


def test_unknown_attribute_missing_observation_classifier_and_nan_latents():
    config = config_from_dict(_raw(pairs=[["a", "zz"]]))
    with pytest.raises(ConfigError, match="unknown attribute 'zz'; this experiment has a, b, c"):
        run_cage(_setup(config), config)
    config = config_from_dict(_raw())
    setup = _setup(config)
    setup.observation_classifier = None
    with pytest.raises(ConfigError, match=r'outcomes = \["latent"\]'):
        run_cage(setup, config)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        run_cage(_setup(config, nan=True), config)


@pytest.fixture
def lintest_kind(monkeypatch):
    calls = {}
    module = types.ModuleType("lintest_kind")

    def setup(config, *, cache_dir):
        calls["cache_dir"] = cache_dir
        return _setup(config, nan=config.option("test", "nan", False))

    def finish(setup, result, stage, config):
        calls["stage"] = stage
        assert (stage / runs.DIRECTIONS).is_file() and not (stage / runs.MANIFEST).exists()
        (stage / "extra.txt").write_text("pairs would go here\n")
        return {"extra": {"pairs": 0, "first_direction": result.directions[0].direction}}

    module.setup, module.finish = setup, finish
    monkeypatch.setitem(__import__("sys").modules, "lintest_kind", module)
    monkeypatch.setitem(registry.BUILTIN_KINDS, "lintest", "lintest_kind")
    return calls


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_run_directory_contents_and_reproducibility(tmp_path, lintest_kind):
    config = config_from_dict(_raw())
    out = tmp_path / "run"
    result = run_experiment(config, out, cache_dir=tmp_path / "cache")
    assert lintest_kind["cache_dir"] == tmp_path / "cache"
    assert lintest_kind["stage"] != out  # finish() wrote into the staging directory
    manifest = runs.read_manifest(out)
    assert manifest["complete"] is True and manifest["schema_version"] == runs.SCHEMA_VERSION
    assert len(manifest["run_id"]) == 12 and int(manifest["run_id"], 16) >= 0
    assert manifest["extra"]["first_direction"] == result.directions[0].direction
    assert manifest["config"]["cage"]["k"] == 600 and manifest["seeds"]["master"] == 3
    assert (out / "extra.txt").is_file()
    for name in ("delta_tau__a__b.png", "null__a__b__latent.png", "null__a__b__observation.png",
                 "mmd__a__b.png"):
        assert (out / runs.PLOTS_DIR / name).read_bytes()[:4] == b"\x89PNG"
    directions = _read(out / runs.DIRECTIONS)
    assert [r["outcome"] for r in directions] == ["latent", "observation"]
    for column in ("m1", "m2", "gate_12", "gate_21", "delta_tau", "p_gate_12", "p_gate_21",
                   "p_delta_tau", "direction", "mmd", "alpha", "k", "cos_normals"):
        assert column in directions[0]
    assert len(_read(out / runs.NULL_DRAWS)) == 2 * 3 * 20  # outcomes x (2 kinds + rotation) x draws
    assert len(_read(out / runs.ALPHA_SWEEP)) == 2 * 2
    classifiers = _read(out / runs.CLASSIFIERS)
    assert [(r["attribute"], r["space"]) for r in classifiers] == [
        ("a", "latent"), ("b", "latent"), ("a", "observation"), ("b", "observation")]

    # Every latent number can be recomputed from artifacts.npz alone.
    art = np.load(out / runs.ARTIFACTS)
    z = art["prior_latents"].astype(np.float64)
    wb, bb = art["clf__b__coef"], float(art["clf__b__intercept"])
    u = art["direction__a__b__a"]
    np.testing.assert_allclose(u, art["clf__a__coef"] / np.linalg.norm(art["clf__a__coef"]))
    logits = z @ wb + bb
    gate = np.mean(sigmoid(logits + wb @ u) - sigmoid(logits - wb @ u))
    assert float(directions[0]["gate_12"]) == pytest.approx(gate, abs=1e-8)
    null = art["null__random__a__b__a"]
    draws = [r for r in _read(out / runs.NULL_DRAWS) if r["null"] == "random" and r["outcome"] == "latent"]
    s = null[7] @ wb
    assert float(draws[7]["gate_12"]) == pytest.approx(np.mean(sigmoid(logits + s) - sigmoid(logits - s)), abs=1e-8)

    # Same seed: byte-identical CSVs.
    run_experiment(config, tmp_path / "again")
    for name in (runs.DIRECTIONS, runs.CLASSIFIERS, runs.ALPHA_SWEEP, runs.NULL_DRAWS):
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert json.loads((out / runs.MANIFEST).read_text())["run_id"] != \
        json.loads((tmp_path / "again" / runs.MANIFEST).read_text())["run_id"]


def test_failure_leaves_nothing_behind(tmp_path, lintest_kind):
    raw = _raw()
    raw["test"] = {"nan": True}
    config = config_from_dict(raw)
    with pytest.raises(ConfigError, match="NaN"):
        run_experiment(config, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_unknown_kind(tmp_path):
    raw = _raw()
    raw["experiment"]["kind"] = "nosuchkind"
    with pytest.raises(ConfigError, match="no such experiment kind"):
        run_experiment(config_from_dict(raw), tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_baselines_run_on_the_prior_samples_probabilities_of_each_space():
    pytest.importorskip("causallearn", reason="the baselines extra (pip install '.[baselines]')")
    from cage.run.baselines import run_baselines
    from cage.run.pipeline import BASELINE_SAMPLES, stage_seed

    config = config_from_dict(_raw(baselines=True, k=300, n_null=3, alphas=[1.0]))
    setup = _setup(config)
    result = run_cage(setup, config)
    lat = result.direction_for("a", "b", "latent")
    obs = result.direction_for("a", "b", "observation")
    assert [b.method for b in lat.baselines] == ["LiNGAM", "ANM", "NOTEARS"]
    z = result.prior_latents[:BASELINE_SAMPLES]
    expected = run_baselines(result.classifiers["a"].predict_proba(z),
                             result.classifiers["b"].predict_proba(z), ("a", "b"),
                             seed=stage_seed(config.seed, "baselines"))
    assert [(b.verdict, b.score) for b in lat.baselines] == [(b.verdict, b.score) for b in expected]
    # eq. 9 reads the observation classifier on the decoded samples; through this exact linear
    # generator those are the latent probabilities up to float32 decoding.
    assert [b.verdict for b in obs.baselines] == [b.verdict for b in expected]
    rows = direction_rows(result)
    assert {r["outcome"]: (r["lingam"], r["anm"], r["notears"]) for r in rows}["latent"] == \
        tuple(b.verdict for b in expected)
