"""The digits experiment end to end with the shipped weights and small CAGE / pair counts: the run
directory, determinism, errors. The dataset is built once per module (about 20 s)."""

import csv
import json
import re

import numpy as np
import pytest

from cage.config.experiment import config_from_dict, load_experiment
from cage.experiments.digits.kind import parse_options
from cage.pairs.output import select_dags
from cage.run.pipeline import CageResult, PairDirection, run_experiment
from cage_eval import runs
from cage_eval.cli.generate import summary
from cage_eval.errors import CageEvalError, ConfigError

TINY = [
    "cage.k=200", "cage.n_null=5", "cage.baselines=false", "cage.k_null_observation=50", "cage.alphas=[1.0, 2.0]",
    "cage.alpha=1.0", "cage.mmd_n=40", "cage.mmd_permutations=10", "cage.min_accuracy=0.5",
    "cage.pairs=[[\"thick\", \"wide\"]]",
    "pairs.n_same_source=6", "pairs.n_same_destination=4", "pairs.dags=[\"thick->wide\"]",
    "pairs.alpha_steps=4", "pairs.alpha_growth=2.0", "pairs.sheet_pairs=4",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def run(out, cache, *extra):
    config = load_experiment("digits", overrides=TINY + list(extra))
    return run_experiment(config, out, cache_dir=cache)


@pytest.mark.slow
def test_run_directory_has_pairs_images_and_sheets(tmp_path, cache):
    result = run(tmp_path / "a", cache)
    run(tmp_path / "b", cache)
    a, b = tmp_path / "a", tmp_path / "b"
    rows = list(csv.DictReader(open(a / runs.PAIRS)))
    assert tuple(rows[0]) == runs.PAIRS_COLUMNS + ("diff_mean_abs", "diff_ssim")
    settings = [r["setting"] for r in rows]
    assert settings.count("same_source") == 6 and settings.count("same_destination") == 4
    # With 5 null draws no p-value can reach 0.05: CAGE calls nothing, the DAG is the declared one.
    assert {r["dag"] for r in rows} == {"thick->wide"}
    images = {p.name for p in (a / runs.IMAGES_DIR).iterdir()}
    for r in rows:
        for col in ("image_source_cause", "image_source_effect", "image_cause", "image_effect"):
            assert r[col] in images and re.fullmatch(r"[0-9a-f]{20}\.png", r[col])
        assert r["ok_cause"] == r["ok_effect"] == "1"
        assert float(r["check_cause"]) >= 0.5 and float(r["check_effect"]) >= 0.5
    sheets = sorted(p.name for p in (a / runs.SHEETS_DIR).iterdir())
    assert len(sheets) == 2 and all(s.endswith(("__same_source.png", "__same_destination.png"))
                                    for s in sheets)
    manifest = json.loads((a / runs.MANIFEST).read_text())
    assert manifest["pairs"]["rows"] == 10
    (rec,) = manifest["pairs"]["dag_sources"]
    assert rec["dag"] == "thick->wide" and rec["source"] == "declared" and rec["declared"]
    assert rec["direction"] in ("?", "⊥") and rec["p_delta_tau"] >= 1 / 6
    assert rec["settings"] == {"same_source": 6, "same_destination": 4} and rec["rows"] == 10
    assert set(rec["calls_by_outcome"]) == {"latent", "observation"}
    # The generate summary ends with one line per DAG about its pairs.
    text = summary(result, tmp_path / "a", 1.0).splitlines()
    assert text[-1].startswith(f"  thick->wide      declared (CAGE observation: {rec['cage_call']}, "
                               f"p(Δτ ≠ 0)={rec['p_delta_tau']:.3f}): 10 rows (same_source 6, "
                               "same_destination 4); sheets: ")
    assert str(tmp_path / "a" / runs.SHEETS_DIR / "thick_to_wide__same_source.png") in text[-1]
    assert manifest["setup"]["weights"]["origin"] == "shipped"
    assert set(manifest["pairs"]["stats"]) == {f"{rows[0]['dag']} same_source",
                                               f"{rows[0]['dag']} same_destination"}
    # Same seed, same pairs and images, byte for byte.
    assert (a / runs.PAIRS).read_bytes() == (b / runs.PAIRS).read_bytes()
    for name in images:
        assert (a / runs.IMAGES_DIR / name).read_bytes() == (b / runs.IMAGES_DIR / name).read_bytes()
    for sheet in sheets:
        assert (a / runs.SHEETS_DIR / sheet).read_bytes() == (b / runs.SHEETS_DIR / sheet).read_bytes()


def test_unknown_attribute_fails_before_any_work(tmp_path, cache):
    with pytest.raises(ConfigError, match="unknown attribute 'shiny'.*thick, bright"):
        run(tmp_path / "x", cache, "cage.pairs=[[\"thick\", \"shiny\"]]")
    assert not (tmp_path / "x").exists()


def test_unknown_option_is_named(tmp_path, cache):
    with pytest.raises(ConfigError, match=r"\[pairs\] n_same_sorce: unknown field"):
        run(tmp_path / "x", cache, "pairs.n_same_sorce=3")
    with pytest.raises(ConfigError, match=r"\[pairs\] target_probability = 1.5: must be in"):
        run(tmp_path / "x", cache, "pairs.target_probability=1.5")


@pytest.mark.slow
def test_too_many_pairs_and_unseparable_dags_leave_nothing_but_checkpoints(tmp_path, cache):
    with pytest.raises(ConfigError, match="n_same_source = 6000: only 5391 source images"):
        run(tmp_path / "x", cache, "pairs.n_same_source=6000")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match=r"not separable enough .* held-out accuracy is 0\.\d+"):
        run(tmp_path / "y", cache, "cage.min_accuracy=0.999")
    assert not (tmp_path / "y").exists()
    # Both failed after eq. 9 was scored: its checkpoints are all that is left ...
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".x.checkpoints", ".y.checkpoints"]
    # ... and the rerun with fewer pairs decodes none of it again (pairs do not change eq. 9).
    run(tmp_path / "x", cache)
    score = runs.read_manifest(tmp_path / "x")["distributed"]["work"]["score"]
    assert score["units"] == score["resumed"] > 0 and score["decoded"] == 0
    assert not (tmp_path / ".x.checkpoints").exists()


def test_unwritable_output_is_a_clear_error(tmp_path, cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CageEvalError, match="output directory"):
        run(blocker / "run", cache)


def test_pair_ids_do_not_reveal_roles():
    # pair ids are a running number; nothing in an image name depends on cause/effect/setting.
    from cage.pairs.images import image_name

    img = np.zeros((28, 28), dtype=np.uint8)
    assert image_name(img) == image_name(img.copy())


def _direction(m1, m2, outcome, call, delta, p_dt):
    cause, effect = {"->": (m1, m2), "<-": (m2, m1)}.get(call, ("", ""))
    return PairDirection(
        m1=m1, m2=m2, outcome=outcome, alpha=1.0, k=10, gate_12=0.5, gate_21=0.5 - delta,
        delta_tau=delta, null="permutation", p_gate_12=0.01, p_gate_21=0.01, p_delta_tau=p_dt,
        p_values={}, direction=call, cause=cause, effect=effect,
        delta_tau_significant=p_dt <= 0.05, sign_stable=True, cos_normals=0.9, norm_w1=1.0,
        norm_w2=1.0, acc_1=0.9, acc_2=0.9, offset_1=0.0, offset_2=0.0, separable=True, mmd=0.0,
        p_mmd=1.0, mmd_2=0.0, p_mmd_2=1.0, n_null_k=10)


def _config(dags):
    return config_from_dict({
        "experiment": {"name": "d", "kind": "digits", "seed": 0},
        "cage": {"pairs": [["thick", "bright"], ["thick", "wide"], ["round", "wide"]]},
        "pairs": {"dags": dags}})


def test_pairs_come_from_called_or_declared_dags_never_from_undetermined_calls():
    config = _config(["thick->bright"])
    dirs = [_direction("thick", "bright", "observation", "?", -0.014, 1.0),
            _direction("thick", "wide", "observation", "->", 0.21, 0.02),
            _direction("round", "wide", "observation", "⊥", 0.07, 0.7),
            _direction("thick", "bright", "latent", "?", 0.013, 0.9)]
    result = CageResult(config=config, classifiers={}, directions=dirs, prior_latents=np.zeros((1, 2)),
                        interventions={}, null_directions={}, sweep_rows=[], null_rows=[],
                        classifier_rows=[], seeds={})
    dags, skipped, records = select_dags(result, config, parse_options(config).output)
    assert dags == [("thick", "wide"), ("thick", "bright")]
    assert [(r["dag"], r["source"], r["direction"]) for r in records] == [
        ("thick->wide", "inferred", "->"), ("thick->bright", "declared", "?")]
    assert records[1]["cage_call"] == "undetermined (?)" and records[1]["p_delta_tau"] == 1.0
    assert records[1]["calls_by_outcome"]["latent"]["p_delta_tau"] == 0.9
    # thick / bright is undetermined, but declared: it is not listed as skipped.
    assert [(s["m1"], s["m2"], s["direction"]) for s in skipped] == [("round", "wide", "⊥")]
    # Declaring a DAG CAGE also called keeps one DAG, inferred, marked declared.
    config = _config(["thick->wide"])
    dags, _, records = select_dags(result, config, parse_options(config).output)
    assert dags == [("thick", "wide")]
    assert (records[0]["source"], records[0]["declared"]) == ("inferred", True)
    # Nothing declared, nothing called: no DAG at all.
    config = _config([])
    result.directions[1] = _direction("thick", "wide", "observation", "?", 0.21, 0.17)
    assert select_dags(result, config, parse_options(config).output)[0] == []


@pytest.mark.parametrize("dags, message", [
    (["thick"], "is not a DAG"),
    (["thick->round"], "not a pair of \\[cage\\] pairs"),
    (["thick->bright", "bright->thick"], "its reverse are both declared"),
    ("thick->bright", "expected a list of strings"),
])
def test_declared_dags_are_checked(dags, message):
    with pytest.raises(ConfigError, match=r"\[pairs\] dags.*" + message):
        parse_options(_config(dags))
