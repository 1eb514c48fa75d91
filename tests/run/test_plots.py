"""What the plots say: the pair and the k of the run in every title, the nulls' k separately, the
MMD's permutation p at each point (issue: plot titles said k=150 where the run had k=1500)."""

from __future__ import annotations

import matplotlib
import matplotlib.axes
import matplotlib.figure

from cage.config.experiment import config_from_dict
from cage.experiments import synthetic
from cage.run.pipeline import run_cage
from cage.run.plots import write_plots

matplotlib.use("Agg", force=True)


def test_titles_name_the_pair_k_and_the_mmd_p(tmp_path, monkeypatch):
    config = config_from_dict({
        "experiment": {"name": "t", "kind": "synthetic", "seed": 0},
        "cage": {"pairs": [["m1", "m2"]], "alphas": [0.5, 1.0], "alpha": 1.0, "k": 900,
                 "n_null": 5, "k_null_observation": 150, "mmd_n": 30, "mmd_permutations": 5,
                 "baselines": False},
        "synthetic": {"dim": 8, "n": 600}})
    result = run_cage(synthetic.setup(config, cache_dir=None), config)
    texts: list[str] = []
    for cls, name in ((matplotlib.axes.Axes, "set_title"), (matplotlib.figure.Figure, "suptitle"),
                      (matplotlib.axes.Axes, "annotate")):
        original = getattr(cls, name)

        def spy(self, text, *args, _original=original, **kwargs):
            texts.append(str(text))
            return _original(self, text, *args, **kwargs)

        monkeypatch.setattr(cls, name, spy)
    names = write_plots(result, tmp_path)
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
    assert any(t.startswith("m1 vs m2: conditioning vs intervening, 30 of k = 900 latents")
               for t in texts)
    # One permutation p next to every MMD point: 2 attributes x 2 alphas.
    assert sum(t.startswith("p=") for t in texts) == 4
    assert not any("k=150" in t or "k = 150 " in t for t in texts)
