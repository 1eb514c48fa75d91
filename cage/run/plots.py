"""PNG plots of a CAGE result (matplotlib, Agg backend): what a person looks at first.

Per attribute pair ``m1__m2``:

- ``delta_tau__m1__m2.png``: delta tau over the alpha grid for each outcome variant, with the
  central 95% band of the decision null (latent variant), and the two GATEs underneath;
- ``null__m1__m2__<outcome>.png``: histograms of the null draws of GATE(m1 -> m2), GATE(m2 -> m1)
  and delta tau for every null kind, the observed value marked, p-values in the titles;
- ``mmd__m1__m2.png``: MMD^2 between conditional and counterfactual latents over alpha.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cage.run.result import CageResult

_COLORS = {"latent": "tab:blue", "observation": "tab:orange", "observation_conditional": "tab:green"}
_LABELS = {
    "latent": "eq. 8, latent outcome",
    "observation": "eq. 9, observation outcome",
    "observation_conditional": "eq. 9, conditional intervention",
}
_NULL_COLORS = {"permutation": "tab:gray", "random": "tab:green", "rotation": "tab:purple"}
_SHORT = {"permutation": "perm", "random": "rand", "rotation": "rot"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    tmp.replace(path)


def write_plots(result: CageResult, out_dir: Path) -> list[str]:
    """Write the plots of ``result`` into ``out_dir``; return the file names."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for m1, m2 in result.config.cage.pairs:
        tag = f"{m1}__{m2}"
        rows = [r for r in result.sweep_rows if r["m1"] == m1 and r["m2"] == m2]
        dirs = {d.outcome: d for d in result.directions if d.m1 == m1 and d.m2 == m2}

        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
        for outcome, d in dirs.items():
            rr = [r for r in rows if r["outcome"] == outcome]
            al = np.array([r["alpha"] for r in rr])
            dt = np.array([r["delta_tau"] for r in rr], dtype=float)
            color = _COLORS.get(outcome, "k")
            label = _LABELS.get(outcome, outcome)
            ax.plot(al, dt, "o-", color=color,
                    label=f"{label}: {d.direction} [{d.rule} rule] (p_dt={d.p_delta_tau:.3g}, "
                          f"centred {d.p_delta_tau_centred:.3g} at alpha={d.alpha:g})")
            if rr and rr[0]["null_lo"] != "":
                lo = np.array([r["null_lo"] for r in rr], dtype=float)
                hi = np.array([r["null_hi"] for r in rr], dtype=float)
                ax.fill_between(al, lo, hi, color=color, alpha=0.15,
                                label=f"{d.null} null, central 95% ({outcome})")
            ax2.plot(al, [r["gate_12"] for r in rr], "o-", color=color,
                     label=f"GATE({m1}->{m2}), {outcome}")
            ax2.plot(al, [r["gate_21"] for r in rr], "s--", color=color,
                     label=f"GATE({m2}->{m1}), {outcome}")
        geo = [r for r in rows if r["outcome"] == rows[0]["outcome"]] if rows else []
        if geo:
            ax.plot([r["alpha"] for r in geo], [r["delta_tau_geometric"] for r in geo], ":",
                    color="0.3", lw=2,
                    label="geometry alone (eq. 8 predicted from offsets, norms, cos)")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel(f"delta tau = |GATE({m1}->{m2})| - |GATE({m2}->{m1})|")
        any_d = next(iter(dirs.values()))
        ax.set_title(f"{m1} vs {m2}, k = {any_d.k} prior latents: cos(h1,h2)={any_d.cos_normals:.2f}, "
                     f"|w1|={any_d.norm_w1:.2f}, |w2|={any_d.norm_w2:.2f}, "
                     f"acc={any_d.acc_1:.2f}/{any_d.acc_2:.2f}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax2.axhline(0, color="k", lw=0.8)
        ax2.set_xlabel("alpha (intervention strength, latent units)")
        ax2.set_ylabel("GATE")
        ax2.legend(fontsize=7, loc="best")
        fig.tight_layout()
        name = f"delta_tau__{tag}.png"
        _save(fig, out_dir / name)
        plt.close(fig)
        names.append(name)

        for outcome, d in dirs.items():
            nulls = [r for r in result.null_rows
                     if r["m1"] == m1 and r["m2"] == m2 and r["outcome"] == outcome]
            kinds = sorted({r["null"] for r in nulls})
            fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
            observed = {"gate_12": d.gate_12, "gate_21": d.gate_21, "delta_tau": d.delta_tau}
            titles = {"gate_12": f"GATE({m1}->{m2})", "gate_21": f"GATE({m2}->{m1})",
                      "delta_tau": "delta tau"}
            p_index = {"gate_12": 0, "gate_21": 1, "delta_tau": 2}
            for axh, stat in zip(axes, ("gate_12", "gate_21", "delta_tau"), strict=True):
                values = [np.array([r[stat] for r in nulls if r["null"] == kind], dtype=float)
                          for kind in kinds]
                lo = min([v.min() for v in values] + [observed[stat]])
                hi = max([v.max() for v in values] + [observed[stat]])
                bins = np.linspace(lo, hi, 31) if hi > lo else 10
                ptext = []
                for kind, v in zip(kinds, values, strict=True):
                    axh.hist(v, bins=bins, histtype="stepfilled" if kind == d.null else "step",
                             alpha=0.5 if kind == d.null else 1.0, lw=1.5,
                             color=_NULL_COLORS.get(kind, "k"), label=f"{kind} null (B={v.size})")
                    if stat == "delta_tau" and kind == "rotation":
                        ptext.append(f"p_rot(centred)={d.p_delta_tau_rotation:.3g}")
                        continue
                    ptext.append(f"p_{_SHORT.get(kind, kind)}={d.p_values[kind][p_index[stat]]:.3g}")
                if stat == "delta_tau":
                    ptext.append(f"p_centred={d.p_delta_tau_centred:.3g}")
                axh.axvline(observed[stat], color="tab:red", lw=2,
                            label=f"observed {observed[stat]:.3f}")
                axh.set_title(f"{titles[stat]}\n" + ", ".join(ptext), fontsize=8)
                axh.legend(fontsize=7)
            fig.suptitle(f"{m1} vs {m2}, {outcome} outcome, alpha={d.alpha:g}, nulls on "
                         f"{d.n_null_k} of the k = {d.k} prior latents: call {d.direction} "
                         f"({d.rule} rule; paper rule {d.direction_paper})", fontsize=10)
            fig.tight_layout()
            name = f"null__{tag}__{outcome}.png"
            _save(fig, out_dir / name)
            plt.close(fig)
            names.append(name)

        fig, ax = plt.subplots(figsize=(6, 4))
        first = [r for r in rows if r["outcome"] == rows[0]["outcome"]] if rows else []
        al = [r["alpha"] for r in first]
        for key, attr in (("mmd_1", m1), ("mmd_2", m2)):
            pkey = f"p_{key}"
            ys = [r[key] for r in first]
            line, = ax.plot(al, ys, "o-",
                            label=f"{attr}: MMD^2( p(z|{attr}=1), p(z|do({attr}=1)) )")
            for x, y, r in zip(al, ys, first, strict=True):
                if r[pkey] == r[pkey]:  # not NaN
                    ax.annotate(f"p={r[pkey]:.2g}", (x, y), textcoords="offset points",
                                xytext=(0, 5), fontsize=6, ha="center", color=line.get_color())
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("alpha")
        ax.set_ylabel("unbiased MMD^2 (permutation p at each point)")
        cc = result.config.cage
        ax.set_title(f"{m1} vs {m2}: conditioning vs intervening, {cc.mmd_n} of k = {cc.k} "
                     "latents per side\n(Gaussian kernel, median bandwidth; "
                     f"{cc.mmd_permutations} permutations)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"mmd__{tag}.png"
        _save(fig, out_dir / name)
        plt.close(fig)
        names.append(name)
    return names
