"""What the plots say: the pair and the k of the run in every title, the nulls' k separately, the
MMD's permutation p at each point (issue: plot titles said k=150 where the run had k=1500); each
variant's delta tau against its own null; no two text boxes of a figure overlap (read from
matplotlib's own bounding boxes, not from pixels)."""

from __future__ import annotations

import matplotlib
import matplotlib.axes
import matplotlib.figure
import numpy as np
import pytest

from cage.config.experiment import config_from_dict
from cage.experiments import synthetic
from cage.run.pipeline import run_cage
from cage.run.plots import clipped_text, overlapping_text, write_plots

matplotlib.use("Agg", force=True)


def _result(alphas=(0.5, 1.0)):
    config = config_from_dict({
        "experiment": {"name": "t", "kind": "synthetic", "seed": 0},
        "cage": {"pairs": [["m1", "m2"]], "alphas": list(alphas), "alpha": 1.0, "k": 900,
                 "n_null": 5, "k_null_observation": 150, "mmd_n": 30, "mmd_permutations": 5,
                 "baselines": False},
        "synthetic": {"dim": 8, "n": 600}})
    return run_cage(synthetic.setup(config, cache_dir=None), config)


@pytest.fixture(scope="module")
def dense():
    """A run on the digits experiment's α grid, where the MMD's p labels used to collide."""
    return _result((0.5, 1.0, 1.5, 2.0, 3.0))


def test_titles_name_the_pair_k_and_the_mmd_p(tmp_path, monkeypatch):
    result = _result()
    texts: list[str] = []
    for cls, name in ((matplotlib.axes.Axes, "set_title"), (matplotlib.figure.Figure, "suptitle"),
                      (matplotlib.axes.Axes, "annotate")):
        original = getattr(cls, name)

        def spy(self, text, *args, _original=original, **kwargs):
            texts.append(str(text))
            return _original(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    figures = {}
    names = write_plots(result, tmp_path, hook=lambda name, fig: figures.setdefault(name, fig))
    assert sorted(names) == ["delta_tau__m1__m2.png", "mmd__m1__m2.png",
                             "null__m1__m2__latent.png", "null__m1__m2__observation.png"]
    delta = [t for t in texts if t.startswith("m1 vs m2, k = 900 prior latents")]
    assert len(delta) == 1
    nulls = [t for t in texts if "nulls on" in t]
    assert nulls == [
        "m1 vs m2, latent outcome, alpha=1, nulls on 900 of the k = 900 prior latents: call "
        f"{result.direction_for('m1', 'm2', 'latent').direction} (controlled rule; paper rule "
        f"{result.direction_for('m1', 'm2', 'latent').direction_paper})",
        "m1 vs m2, observation outcome, alpha=1, nulls on 150 of the k = 900 prior latents: call "
        f"{result.direction_for('m1', 'm2', 'observation').direction} (controlled rule; paper rule "
        f"{result.direction_for('m1', 'm2', 'observation').direction_paper})"]
    assert any(t.startswith("m1 vs m2: conditioning vs intervening,\n30 of k = 900 latents")
               for t in texts)
    # The MMD's permutation p of every point, in a panel of its own (no labels to collide).
    assert not any(t.startswith("p=") for t in texts)
    p_panel = figures["mmd__m1__m2.png"].axes[1]
    points = [line for line in p_panel.get_lines() if line.get_linestyle() == "None"]
    sweep = [r for r in result.sweep_rows if r["outcome"] == result.sweep_rows[0]["outcome"]]
    assert [list(line.get_ydata()) for line in points] == [
        [r["p_mmd_1"] for r in sweep], [r["p_mmd_2"] for r in sweep]]
    assert not any("k=150" in t or "k = 150 " in t for t in texts)


def test_no_text_box_overlaps_another_in_any_figure(dense, tmp_path):
    figures = {}
    names = write_plots(dense, tmp_path, hook=lambda name, fig: figures.setdefault(
        name, overlapping_text(fig) + clipped_text(fig)))
    assert len(names) == 4
    assert figures == {name: [] for name in names}


def test_each_variant_is_drawn_against_its_own_null(dense, tmp_path):
    figures = {}
    write_plots(dense, tmp_path, hook=lambda name, fig: figures.setdefault(name, fig))
    fig = figures["delta_tau__m1__m2.png"]
    latent, observation, gates = fig.axes[:3]
    assert latent.get_title().startswith("eq. 8, latent outcome: call ")
    assert observation.get_title().startswith("eq. 9, observation outcome: call ")

    def labels(ax):
        return ax.get_legend_handles_labels()[1]

    assert "permutation null of this variant, central 95%" in labels(latent)
    assert "permutation null of this variant, central 95% (at α = 1 only)" in labels(observation)
    assert "rotation null, central 95% (at α = 1)" in labels(observation)
    assert not any("latent" in label for label in labels(observation))
    # The eq. 9 interval is the central 95 % of eq. 9's own null draws at the headline alpha.
    draws = np.array([r["delta_tau"] for r in dense.null_rows
                      if r["outcome"] == "observation" and r["null"] == "permutation"])
    segments = [c for c in observation.collections if c.get_label() == "_nolegend_"
                or "null" in str(c.get_label())]
    spans = [seg.get_segments()[0] for c in segments if hasattr(c, "get_segments")
             for seg in [c] if c.get_segments()]
    lows = sorted(round(float(s[:, 1].min()), 9) for s in spans)
    assert round(float(np.quantile(draws, 0.025)), 9) in lows
    assert gates.get_ylabel() == "GATE"


def test_overlapping_text_finds_an_overlap():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.text(0.5, 0.5, "p=0.36", fontsize=6)
    ax.text(0.5, 0.5, "p=0.27", fontsize=6)
    ax.set_title("a title far too long for its figure " * 8)
    try:
        assert overlapping_text(fig) == [("p=0.36", "p=0.27")]
        assert clipped_text(fig) == ["a title far too long for its figure " * 8]
    finally:
        plt.close(fig)
