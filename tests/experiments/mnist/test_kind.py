"""The morphomnist experiment kind: option errors, and the whole run (data, flow, CNN, both judges,
pairs) at a tiny size with a flow trained in a few steps, plus `cage-eval train -e morphomnist`."""

import csv
import json

import pytest
from click.testing import CliRunner

from cage.config.experiment import load_experiment
from cage.experiments.mnist.kind import parse_options
from cage.experiments.registry import BUILTIN_KINDS, kind_names
from cage.run.pipeline import run_experiment
from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import ConfigError

#: A 100-digit dataset and a flow of 4 steps: the code paths, not the science (seconds, not hours).
TINY = [
    "data.n_digits=100", "data.draws=1", "flow.steps=4", "flow.blocks=1", "flow.hidden=8",
    "flow.batch_size=8", "flow.warmup=2", "obs_classifier.epochs=1",
    "cage.k=64", "cage.n_null=3", "cage.k_null_observation=16", "cage.alphas=[1.0, 2.0]",
    "cage.alpha=1.0", "cage.mmd_n=20", "cage.mmd_permutations=10", "cage.min_accuracy=0.5",
    "pairs.n_same_source=3", "pairs.n_same_destination=0", "pairs.alpha_steps=2",
    "pairs.sheet_pairs=2", "pairs.check_threshold=0.01",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_kind_is_registered_with_its_two_builtin_experiments():
    assert BUILTIN_KINDS["morphomnist"] == "cage.experiments.mnist.kind"
    assert "morphomnist" in kind_names()
    tight = parse_options(load_experiment("morphomnist"))
    loose = parse_options(load_experiment("morphomnist_loose"))
    assert tight.models.data.intensity_noise == 0.5 and loose.models.data.intensity_noise == 1.5
    assert tight.models.flow == loose.models.flow and tight.output.dags == (("thick", "bright"),)
    assert tight.judge == "cnn" and tight.temperature == 1.0


@pytest.mark.parametrize(("override", "message"), [
    ("data.thick_quantile=0.99", "[data] thick_quantile = 0.99: must be in [0.05, 0.95]"),
    ("data.bright_quantile=\"half\"", "[data] bright_quantile = 'half': expected a number"),
    ("data.n_digits=6000", "[data] n_digits = 6000: must be in 10..5000"),
    ("data.intensity_noise=-1", "[data] intensity_noise = -1.0: must be >= 0"),
    ("flow.levels=3", "[flow] levels = 3: must be 1 or 2"),
    ("flow.temperature=0", "[flow] temperature = 0.0: must be positive"),
    ("flow.depth=3", "[flow] depth: unknown field"),
    ("observation.judge=\"eyes\"", "[observation] judge = 'eyes': must be one of 'cnn', "
                                   "'morphometry'"),
    ("vae.epochs=3", "[vae]: unknown section for kind 'morphomnist'"),
])
def test_bad_options_are_one_line_errors(override, message):
    config = load_experiment("morphomnist", overrides=[override])
    with pytest.raises(ConfigError) as info:
        parse_options(config)
    assert message in str(info.value)


def test_unknown_attribute_is_refused_before_any_work(tmp_path):
    config = load_experiment("morphomnist", overrides=["cage.pairs=[[\"thick\", \"round\"]]"])
    with pytest.raises(ConfigError, match="unknown attribute 'round'; the morphomnist experiment "
                                          "has thick, bright, slanted, wide"):
        run_experiment(config, tmp_path / "run", cache_dir=tmp_path)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("judge", ["cnn", "morphometry"])
def test_tiny_run_end_to_end(tmp_path, cache, judge):
    config = load_experiment("morphomnist", overrides=TINY + [f"observation.judge=\"{judge}\""])
    result = run_experiment(config, tmp_path / "run", cache_dir=cache)
    run = tmp_path / "run"
    manifest = json.loads((run / runs.MANIFEST).read_text())
    assert manifest["setup"]["observation_judge"] == judge
    assert manifest["setup"]["flow"]["latent_dim"] == 784
    assert set(manifest["setup"]["morphometric_links"]) == {"thick", "bright", "slanted", "wide"}
    assert {d.outcome for d in result.directions} == {"latent", "observation"}
    rows = list(csv.DictReader(open(run / runs.PAIRS)))
    assert len(rows) == 3 and {r["dag"] for r in rows} == {"thick->bright"}
    assert manifest["pairs"]["dag_sources"][0]["source"] in ("declared", "inferred")
    # The second run finds the trained flow and CNN in the cache.
    if judge == "morphometry":
        assert manifest["setup"]["weights"]["origin"] == {"flow": "cache", "obs": "cache"}


@pytest.mark.slow
def test_train_command_writes_both_components(tmp_path, cache):
    args = ["train", "-e", "morphomnist", "--out", str(tmp_path / "w"), "--cache-dir", str(cache)]
    for item in TINY[:8]:
        args += ["--set", item]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "  flow step 4/4: " + lines[0].split(": ", 1)[1]
    assert any(line.startswith("flow: 4 steps in ") and "held out" in line for line in lines)
    names = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert len(names) == 4 and names[0].startswith("morphomnist_flow_")
    assert names[2].startswith("morphomnist_obs_") and names[3].endswith(".pt")
