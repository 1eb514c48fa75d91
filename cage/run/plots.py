"""PNG plots of a CAGE result (matplotlib, Agg backend): what a person looks at first.

Per attribute pair ``m1__m2``:

- ``delta_tau__m1__m2.png``: one panel per outcome variant, each with delta tau over the alpha grid
  against *its own* decision null (eq. 8: the null's central 95% band at every alpha; eq. 9,
  whose nulls are drawn at the headline alpha only: the central 95% of its decision null and of
  its rotation null there), eq. 8's geometric prediction, and the two GATEs underneath;
- ``null__m1__m2__<outcome>.png``: histograms of the null draws of GATE(m1 -> m2), GATE(m2 -> m1)
  and delta tau for every null kind, the observed value marked, the p-values (named as in
  :data:`cage_eval.runs.P_VALUE_NAMES`) in the titles;
- ``mmd__m1__m2.png``: MMD^2 between conditional and counterfactual latents over alpha, and the
  permutation p-value of each point in a panel of its own (labels beside points overlapped).

Every figure's text boxes (titles, axis and tick labels, legends) are laid out not to overlap
and not to be cut off; :func:`overlapping_text` and :func:`clipped_text` find any that are (tests
run them on every figure).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cage_eval.runs import p_value_name as p_name

if TYPE_CHECKING:
    from cage.run.result import CageResult

_COLORS = {"latent": "tab:blue", "observation": "tab:orange", "observation_conditional": "tab:green"}
_LABELS = {
    "latent": "eq. 8, latent outcome",
    "observation": "eq. 9, observation outcome",
    "observation_conditional": "eq. 9, conditional intervention",
}
_NULL_COLORS = {"permutation": "tab:gray", "random": "tab:green", "rotation": "tab:purple"}

#: Called with each figure's file name and the figure before it is saved (tests inspect them).
FigureHook = Callable[[str, Any], None]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, hook: FigureHook | None) -> None:
    if hook is not None:
        hook(path.name, fig)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, metadata={"Software": None})
    tmp.replace(path)


def text_boxes(fig) -> list[tuple[str, Any]]:
    """``(text, window bbox)`` of every text ``fig`` draws: visible, non-empty, tick labels
    inside their axis' view (a legend counts as one box: the texts inside it are its own)."""
    import matplotlib.text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    inside = {id(t) for leg in legends for t in (*leg.get_texts(), leg.get_title())}
    # Tick labels outside the axis' view are not drawn (matplotlib keeps spare ticks).
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            pad = 1e-9 * max(1.0, abs(hi - lo))
            for tick in (*axis.get_major_ticks(), *axis.get_minor_ticks()):
                if not lo - pad <= tick.get_loc() <= hi + pad:
                    inside.update((id(tick.label1), id(tick.label2)))
    boxes = [(f"legend {' / '.join(t.get_text() for t in leg.get_texts())[:60]}",
              leg.get_window_extent(renderer)) for leg in legends]
    for t in fig.findobj(matplotlib.text.Text):
        if id(t) in inside or not t.get_visible() or not t.get_text().strip():
            continue
        boxes.append((t.get_text(), t.get_window_extent(renderer)))
    return boxes


def overlapping_text(fig, *, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Every pair of text boxes of ``fig`` that overlap by more than ``tolerance`` pixels in both
    directions (an empty list for a readable figure)."""
    boxes = text_boxes(fig)
    out = []
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            dx = min(a.x1, b.x1) - max(a.x0, b.x0)
            dy = min(a.y1, b.y1) - max(a.y0, b.y0)
            if dx > tolerance and dy > tolerance:
                out.append((ta, tb))
    return out


def clipped_text(fig, *, tolerance: float = 1.0) -> list[str]:
    """Every text of ``fig`` whose box reaches beyond the figure's edges (cut off when saved)."""
    edge = fig.bbox
    return [text for text, b in text_boxes(fig)
            if b.x0 < edge.x0 - tolerance or b.x1 > edge.x1 + tolerance
            or b.y0 < edge.y0 - tolerance or b.y1 > edge.y1 + tolerance]


def _central(values: np.ndarray) -> tuple[float, float] | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return None if v.size == 0 else (float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975)))


def _delta_tau_figure(plt, result: CageResult, m1: str, m2: str, rows, dirs, nulls):
    outcomes = list(dirs)
    fig, axes = plt.subplots(len(outcomes) + 1, 1, figsize=(8, 2.7 * len(outcomes) + 3.0),
                             sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [3] * len(outcomes) + [2.4]})
    gate_ax = axes[-1]
    span = [float(r["alpha"]) for r in rows] or [0.0, 1.0]
    width = (max(span) - min(span)) or 1.0
    for ax, outcome in zip(axes, outcomes, strict=False):
        d = dirs[outcome]
        rr = [r for r in rows if r["outcome"] == outcome]
        al = np.array([r["alpha"] for r in rr], dtype=float)
        dt = np.array([r["delta_tau"] for r in rr], dtype=float)
        color = _COLORS.get(outcome, "k")
        ax.plot(al, dt, "o-", color=color, label="Δτ observed")
        if rr and rr[0]["null_lo"] != "":
            lo = np.array([r["null_lo"] for r in rr], dtype=float)
            hi = np.array([r["null_hi"] for r in rr], dtype=float)
            ax.fill_between(al, lo, hi, color=color, alpha=0.15,
                            label=f"{d.null} null of this variant, central 95%")
        else:
            band = _central([r["delta_tau"] for r in nulls
                             if r["outcome"] == outcome and r["null"] == d.null])
            if band is not None:
                ax.errorbar([d.alpha - 0.012 * width], [sum(band) / 2],
                            yerr=[[sum(band) / 2 - band[0]], [band[1] - sum(band) / 2]],
                            fmt="none", ecolor=color, elinewidth=6, alpha=0.35, capsize=0,
                            label=f"{d.null} null of this variant, central 95% (at α = "
                                  f"{d.alpha:g} only)")
        if outcome != "latent":
            band = _central([r["delta_tau"] for r in nulls
                             if r["outcome"] == outcome and r["null"] == "rotation"])
            if band is not None:
                ax.errorbar([d.alpha + 0.012 * width], [sum(band) / 2],
                            yerr=[[sum(band) / 2 - band[0]], [band[1] - sum(band) / 2]],
                            fmt="none", ecolor=_NULL_COLORS["rotation"], elinewidth=6, alpha=0.45,
                            capsize=0, label=f"rotation null, central 95% (at α = {d.alpha:g})")
        else:
            ax.plot(al, [r["delta_tau_geometric"] for r in rr], ":", color="0.3", lw=2,
                    label="geometry alone (offsets, norms, cos)")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("Δτ")
        ax.set_title(f"{_LABELS.get(outcome, outcome)}: call {d.direction} ({d.rule} rule; paper "
                     f"{d.direction_paper}); at α = {d.alpha:g}: {p_name('p_delta_tau')} = "
                     f"{d.p_delta_tau:.3g}, {p_name('p_delta_tau_centred')} = "
                     f"{d.p_delta_tau_centred:.3g}", fontsize=8)
        ax.legend(fontsize=7, loc="best")
        gate_ax.plot(al, [r["gate_12"] for r in rr], "o-", color=color,
                     label=f"GATE({m1}→{m2}), {outcome}")
        gate_ax.plot(al, [r["gate_21"] for r in rr], "s--", color=color,
                     label=f"GATE({m2}→{m1}), {outcome}")
    gate_ax.axhline(0, color="k", lw=0.8)
    gate_ax.set_xlabel("α (intervention strength, latent units)")
    gate_ax.set_ylabel("GATE")
    gate_ax.legend(fontsize=7, loc="best", ncols=2)
    any_d = next(iter(dirs.values()))
    fig.suptitle(f"{m1} vs {m2}, k = {any_d.k} prior latents: Δτ = |GATE({m1}→{m2})| − "
                 f"|GATE({m2}→{m1})|,\neach variant against its own null; latent classifiers: "
                 f"cos(h1,h2)={any_d.cos_normals:.2f}, |w1|={any_d.norm_w1:.2f}, "
                 f"|w2|={any_d.norm_w2:.2f}, accuracy {any_d.acc_1:.2f}/{any_d.acc_2:.2f}",
                 fontsize=9)
    return fig


def _null_figure(plt, m1: str, m2: str, outcome: str, d, nulls):
    kinds = sorted({r["null"] for r in nulls})
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), layout="constrained")
    observed = {"gate_12": d.gate_12, "gate_21": d.gate_21, "delta_tau": d.delta_tau}
    titles = {"gate_12": f"GATE({m1}→{m2})", "gate_21": f"GATE({m2}→{m1})", "delta_tau": "Δτ"}
    p_index = {"gate_12": 0, "gate_21": 1, "delta_tau": 2}
    p_names = {"gate_12": p_name("p_gate_12", m1, m2), "gate_21": p_name("p_gate_21", m1, m2),
               "delta_tau": p_name("p_delta_tau")}
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
                continue
            ptext.append(f"{kind} {d.p_values[kind][p_index[stat]]:.3g}")
        lines = [f"{p_names[stat]}: " + ", ".join(ptext)]
        if stat == "delta_tau":
            lines.append(f"{p_name('p_delta_tau_centred')} ({d.null}) {d.p_delta_tau_centred:.3g}, "
                         f"{p_name('p_delta_tau_rotation')} {d.p_delta_tau_rotation:.3g}")
        axh.axvline(observed[stat], color="tab:red", lw=2, label=f"observed {observed[stat]:.3f}")
        axh.set_title(f"{titles[stat]}\n" + "\n".join(lines), fontsize=8)
        axh.legend(fontsize=7)
    fig.suptitle(f"{m1} vs {m2}, {outcome} outcome, alpha={d.alpha:g}, nulls on "
                 f"{d.n_null_k} of the k = {d.k} prior latents: call {d.direction} "
                 f"({d.rule} rule; paper rule {d.direction_paper})", fontsize=10)
    return fig


def _mmd_figure(plt, result: CageResult, m1: str, m2: str, rows):
    fig, (ax, axp) = plt.subplots(2, 1, figsize=(6.5, 5.6), sharex=True, layout="constrained",
                                  gridspec_kw={"height_ratios": [3, 2]})
    first = [r for r in rows if r["outcome"] == rows[0]["outcome"]] if rows else []
    al = np.array([r["alpha"] for r in first], dtype=float)
    width = (al.max() - al.min()) if al.size > 1 else 1.0
    cc = result.config.cage
    for i, (key, attr) in enumerate((("mmd_1", m1), ("mmd_2", m2))):
        ys = [r[key] for r in first]
        line, = ax.plot(al, ys, "o-", label=f"{attr}: MMD²( p(z|{attr}=1), p(z|do({attr}=1)) )")
        ps = np.array([r[f"p_{key}"] for r in first], dtype=float)
        # Side by side, so equal p-values of the two attributes stay visible.
        axp.plot(al + (i - 0.5) * 0.02 * width, ps, "o", color=line.get_color(),
                 label=f"{p_name('p_mmd')}, {attr}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("unbiased MMD²")
    ax.legend(fontsize=7)
    axp.axhline(cc.level, color="tab:red", lw=1, ls="--", label=f"level {cc.level:g}")
    axp.axhline(1.0 / (cc.mmd_permutations + 1), color="0.5", lw=1, ls=":",
                label=f"smallest possible p, 1/({cc.mmd_permutations}+1)")
    axp.set_ylim(0, 1.05)
    axp.set_ylabel(p_name("p_mmd"))
    axp.set_xlabel("α")
    axp.legend(fontsize=7, ncols=2, loc="upper right")
    ax.set_title(f"{m1} vs {m2}: conditioning vs intervening,\n{cc.mmd_n} of k = {cc.k} "
                 "latents per side (latent space; Gaussian kernel, median bandwidth;\n"
                 f"{p_name('p_mmd')} from {cc.mmd_permutations} permutations)", fontsize=9)
    return fig


def write_plots(result: CageResult, out_dir: Path, *, hook: FigureHook | None = None
                ) -> list[str]:
    """Write the plots of ``result`` into ``out_dir``; return the file names. ``hook`` sees
    every figure before it is saved."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for m1, m2 in result.config.cage.pairs:
        tag = f"{m1}__{m2}"
        rows = [r for r in result.sweep_rows if r["m1"] == m1 and r["m2"] == m2]
        dirs = {d.outcome: d for d in result.directions if d.m1 == m1 and d.m2 == m2}
        nulls = [r for r in result.null_rows if r["m1"] == m1 and r["m2"] == m2]

        figures = [(f"delta_tau__{tag}.png",
                    partial(_delta_tau_figure, plt, result, m1, m2, rows, dirs, nulls))]
        figures += [(f"null__{tag}__{outcome}.png",
                     partial(_null_figure, plt, m1, m2, outcome, d,
                             [r for r in nulls if r["outcome"] == outcome]))
                    for outcome, d in dirs.items()]
        figures.append((f"mmd__{tag}.png", partial(_mmd_figure, plt, result, m1, m2, rows)))
        for name, make in figures:
            fig = make()
            try:
                _save(fig, out_dir / name, hook)
            finally:
                plt.close(fig)
            names.append(name)
    return names
