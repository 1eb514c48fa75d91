"""Experiment configs (cage.config.experiment)."""

from __future__ import annotations

import pytest

from cage.config.experiment import (
    DEFAULT_EXPERIMENT,
    CageConfig,
    auto_n_null,
    builtin_experiments,
    config_from_dict,
    load_experiment,
)
from cage_eval.errors import ConfigError


def test_builtins_load_with_defaults_and_kind_sections():
    assert {"mog", "mog_reversed"} <= set(builtin_experiments())
    assert DEFAULT_EXPERIMENT in builtin_experiments()
    cfg = load_experiment("mog")
    assert cfg.kind == "mog" and cfg.source == "built-in:mog"
    assert cfg.cage.pairs == (("m_c", "m_e"),)
    assert cfg.cage.classifier == CageConfig().classifier
    assert cfg.kind_options["flow"]["reverse"] is False
    assert load_experiment("mog_reversed").kind_options["flow"]["reverse"] is True
    as_dict = cfg.to_dict()
    assert as_dict["cage"]["pairs"] == [["m_c", "m_e"]] and as_dict["flow"]["transforms"] == 5


def test_overrides_and_seed(tmp_path):
    cfg = load_experiment("mog", overrides=["cage.k=123", "cage.alphas=[0.5, 1]",
                                            "flow.steps=7", "cage.classifier=linsvm"], seed=9)
    assert cfg.cage.k == 123 and cfg.cage.alphas == (0.5, 1.0) and cfg.seed == 9
    assert cfg.option("flow", "steps", None) == 7 and cfg.cage.classifier == "linsvm"
    with pytest.raises(ConfigError, match="section.key=value"):
        load_experiment("mog", overrides=["k=3"])


@pytest.mark.parametrize("override, message", [
    ("cage.alpha=0", r"\[cage\] alpha: alpha = 0.0 must be a positive"),
    ("cage.alphas=[1, -0.5]", r"\[cage\] alphas: alpha = -0.5"),
    ("cage.k=1", r"\[cage\] k = 1: need at least 2"),
    ("cage.classifier=svm", r"\[cage\] classifier = 'svm': choose one of logreg, linsvm"),
    ("cage.pairs=[['m_c', 'm_c']]", r"\[cage\] pairs"),
    ("cage.null=random", None),
    ("cage.nulls=['random']", r"\[cage\] null = 'permutation': must be one of"),
    ("cage.bogus=1", r"\[cage\] bogus: unknown field"),
    ("cage.n_null=0", r"n_null = 0"),
    ("cage.correction=holm", r"\[cage\] correction = .holm.: choose one of bonferroni, none"),
])
def test_invalid_fields_name_the_field(override, message):
    if message is None:
        assert load_experiment("mog", overrides=[override]).cage.null == "random"
        return
    with pytest.raises(ConfigError, match=message) as info:
        load_experiment("mog", overrides=[override])
    assert "built-in:mog" in str(info.value)


def test_files_unknown_names_and_malformed_toml(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; choose one of"):
        load_experiment("nope")
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1\n")
    with pytest.raises(ConfigError, match=r"bad.toml: malformed TOML"):
        load_experiment(bad)
    nosection = tmp_path / "nosection.toml"
    nosection.write_text("[cage]\npairs = [['a', 'b']]\n")
    with pytest.raises(ConfigError, match=r"missing section \[experiment\]"):
        load_experiment(nosection)
    good = tmp_path / "mine.toml"
    good.write_text('[experiment]\nname = "mine"\nkind = "mog"\n[cage]\npairs = [["m_c", "m_e"]]\n'
                    "alphas = [1, 2]\n[flow]\nsteps = 10\n")
    cfg = load_experiment(good)
    assert cfg.name == "mine" and cfg.cage.alphas == (1.0, 2.0) and cfg.source == str(good)


@pytest.mark.parametrize("pairs, outcomes, expected", [
    (1, 1, 39), (1, 2, 79), (3, 2, 239), (8, 2, 639),
])
def test_auto_null_size_resolves_the_corrected_level(pairs, outcomes, expected):
    names = [[f"a{i}", f"b{i}"] for i in range(pairs)]
    kinds = ["latent", "observation"][:outcomes]
    cfg = load_experiment("mog", overrides=[f"cage.pairs={names}", f"cage.outcomes={kinds}",
                                            'cage.n_null="auto"'])
    cc = cfg.cage
    assert cc.n_null_auto and cc.n_null == expected and cc.tests == pairs * outcomes
    assert cc.call_level() == pytest.approx(0.05 / (pairs * outcomes))
    # The smallest attainable p is below the corrected level, with one null draw of room: a
    # statistic beaten by one draw (p = 2 / (n + 1)) still reaches it; one draw fewer would not.
    assert 1 / (cc.n_null + 1) < cc.call_level()
    assert 2 / (cc.n_null + 1) <= cc.call_level() < 2 / cc.n_null
    assert auto_n_null(cc.tests, 0.05) == cc.n_null


def test_auto_is_the_default_and_a_number_overrides_it():
    raw = {"experiment": {"name": "x", "kind": "mog"}, "cage": {"pairs": [["m_c", "m_e"]]}}
    cc = config_from_dict(raw).cage
    assert cc.n_null_auto and cc.n_null == 79 and cc.correction == "bonferroni"
    raw["cage"].update({"n_null": 12, "correction": "none"})
    cc = config_from_dict(raw).cage
    assert not cc.n_null_auto and cc.n_null == 12 and cc.call_level() == 0.05
    # Without a correction the auto size resolves the uncorrected level.
    assert auto_n_null(2, 0.05, "none") == 39


def test_falsified_is_a_sentence_and_defaults_to_empty():
    assert load_experiment("mog").cage.falsified == ""
    cfg = load_experiment("mog", overrides=['cage.falsified="the reversed data gave the same arrow"'])
    assert cfg.cage.falsified == "the reversed data gave the same arrow"
    with pytest.raises(ConfigError, match=r"\[cage\] falsified = 3: expected str"):
        load_experiment("mog", overrides=["cage.falsified=3"])
