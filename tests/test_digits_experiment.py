"""The digits experiment end to end with the shipped weights and small CAGE / pair counts: the run
directory, determinism, errors. The dataset is built once per module (about 20 s)."""

import csv
import json
import re

import numpy as np
import pytest

from cage.config import load_experiment
from cage.pipeline import run_experiment
from cage_eval import runs
from cage_eval.errors import CageEvalError, ConfigError

TINY = [
    "cage.k=200", "cage.n_null=5", "cage.k_null_observation=50", "cage.alphas=[1.0, 2.0]",
    "cage.alpha=1.0", "cage.mmd_n=40", "cage.mmd_permutations=10", "cage.min_accuracy=0.5",
    "cage.pairs=[[\"thick\", \"wide\"]]",
    "pairs.n_same_source=6", "pairs.n_same_destination=4", "pairs.include_independent=true",
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
    run(tmp_path / "a", cache)
    run(tmp_path / "b", cache)
    a, b = tmp_path / "a", tmp_path / "b"
    rows = list(csv.DictReader(open(a / runs.PAIRS)))
    assert tuple(rows[0]) == runs.PAIRS_COLUMNS
    settings = [r["setting"] for r in rows]
    assert settings.count("same_source") == 6 and settings.count("same_destination") == 4
    assert {r["dag"] for r in rows} <= {"thick->wide", "wide->thick"}
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
def test_too_many_pairs_and_unseparable_dags_leave_nothing(tmp_path, cache):
    with pytest.raises(ConfigError, match="n_same_source = 6000: only 5391 source images"):
        run(tmp_path / "x", cache, "pairs.n_same_source=6000")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match=r"not separable enough .* held-out accuracy is 0\.\d+"):
        run(tmp_path / "y", cache, "cage.min_accuracy=0.999")
    assert not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unwritable_output_is_a_clear_error(tmp_path, cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CageEvalError, match="output directory"):
        run(blocker / "run", cache)


def test_pair_ids_do_not_reveal_roles():
    # pair ids are a running number; nothing in an image name depends on cause/effect/setting.
    from cage.images import image_name

    img = np.zeros((28, 28), dtype=np.uint8)
    assert image_name(img) == image_name(img.copy())
