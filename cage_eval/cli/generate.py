"""``cage-eval`` commands: generate."""

from __future__ import annotations

import math
import time
from pathlib import Path

import click

# cage.config.experiment needs only the standard library: importing it here keeps `--help` fast.
from cage.config.experiment import DEFAULT_EXPERIMENT, auto_n_null


@click.command("generate")
@click.option("--experiment", "-e", "experiment", default=DEFAULT_EXPERIMENT, show_default=True,
              metavar="NAME|PATH.toml", help="Built-in experiment name or a TOML file.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory to write. [default: runs/<experiment name>]")
@click.option("--seed", type=click.IntRange(min=0), default=None,
              help="Master seed; replaces [experiment] seed.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override one config field (repeatable), e.g. --set cage.k=2000 "
                   "--set 'cage.alphas=[0.5,1]'.")
@click.option("--rule", type=click.Choice(["controlled", "paper"]), default=None,
              help="Call rule that fills the direction column (both are always reported); "
                   "replaces [cage] rule. [default: controlled]")
@click.option("--force", is_flag=True, default=False, show_default=True,
              help="Replace an existing, non-empty run directory (only once the new run is complete).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where trained generators are cached. [default: $CAGE_EVAL_CACHE or "
                   "~/.cache/cage-eval]")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Where the generator and classifier compute; replaces [generator] device "
                   "(experiments of kind 'generator').")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads for CPU work (capped at the CPUs available). 1 is fastest for "
                   "the built-in models and on a shared machine; raise it for a large generator "
                   "on a dedicated many-core CPU.")
@click.option("--list", "list_only", is_flag=True, default=False,
              help="List the built-in experiments and exit.")
def generate(experiment, out, seed, overrides, rule, force, cache_dir, device, threads, list_only):
    """Run CAGE on an experiment and write a run directory.

    Trains (or loads from the cache) the experiment's generator, fits the latent attribute
    classifiers, computes GATE in both directions, delta tau over the alpha grid, null
    distributions with p-values, MMD and diagnostics, and makes the counterfactual pairs
    (experiments with a [pairs] section).

    \b
    Writes into the run directory (built aside, moved into place only when complete):
      report.html          everything below on one self-contained page: open it first
      directions.csv       CAGE's calls, GATEs, delta tau and their p-values per pair
      classifiers.csv      held-out accuracy of every attribute classifier (paper Table 1)
      alpha_sweep.csv, null_draws.csv, artifacts.npz    every number behind them
      plots/*.png          delta tau over alpha with its nulls, null histograms, MMD
      pairs.csv, images/   the counterfactual pairs (what `publish` shows people)
      sheets/*.png         contact sheets of the pairs, per DAG and setting
      manifest.json        config, seeds, versions (written last)
    Trained generators are cached in ~/.cache/cage-eval/ (--cache-dir; safe to delete).

    \b
    Examples:
      cage-eval generate                                  # the built-in default experiment
      cage-eval generate --experiment mog --out runs/mog
      cage-eval generate -e mog_reversed --seed 3 --set cage.k=5000
      cage-eval generate -e my_experiment.toml --force    # your own TOML file
      cage-eval generate -e celebahq_stylegan2 --device cuda   # needs a GPU and your weights:
                                                          # docs/generators.md
    """
    from cage.config.experiment import builtin_experiments, load_experiment
    from cage.run.pipeline import run_experiment

    if list_only:
        for name in builtin_experiments():
            cfg = load_experiment(name)
            click.echo(f"{name:16s} {cfg.description}")
        return
    if rule is not None:
        overrides = (*overrides, f"cage.rule={rule}")
    config = load_experiment(experiment, overrides=overrides, seed=seed)
    if device is not None:
        if "generator" not in config.kind_options:
            from cage_eval.errors import ConfigError

            raise ConfigError(f"--device: experiment {config.name!r} (kind {config.kind!r}) has "
                              "no [generator] section; it runs on the CPU, drop --device")
        config = load_experiment(experiment, overrides=(*overrides, f"generator.device={device}"),
                                 seed=seed)
    _check_hit_domain(config)
    out = out if out is not None else Path("runs") / config.name
    from cage.compute.runtime import set_threads

    set_threads(threads)
    started = time.perf_counter()
    from cage_eval.files import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            result = run_experiment(config, out, force=force, cache_dir=cache_dir)
    except KeyboardInterrupt:
        _say_where_the_checkpoints_are(out)
        raise
    if result is None:  # a rank > 0 of a torchrun job: rank 0 reports (docs/distributed.md)
        return
    from cage_eval.cli.report import refresh_report

    refresh_report(out)
    elapsed = time.perf_counter() - started
    click.echo(summary(result, out, elapsed))


def _say_where_the_checkpoints_are(out: Path) -> None:
    """After Ctrl-C: the saved eq. 9 work, where it is and what to do with it (stderr)."""
    from cage.compute.checkpoints import checkpoint_dir

    folder = checkpoint_dir(out)
    try:
        parts = [p for p in folder.iterdir() if p.is_file()]
    except OSError:
        return
    if not parts:
        return
    size = sum(p.stat().st_size for p in parts) / 1e6
    click.echo(f"Interrupted: the eq. 9 work done so far is saved in {folder}/ ({len(parts)} "
               f"file(s), {size:.1f} MB). Run the same command again to resume from it (it is "
               "deleted once the run completes), or delete that folder to start over.", err=True)


#: How the summary names the calls that are not arrows.
CALL_NAMES = {"?": "undetermined (?)", "⊥": "independent (⊥)"}

#: The last line of the summary: the rule that filled the call column.
RULE_LINES = {
    "controlled": ("call rule (controlled): an arrow needs a significant GATE, p(Δτ off-centre) "
                   "<= {level:.4g} and, on eq. 9, p(Δτ rotation) <= {level:.4g} (eq. 8 never: its "
                   "Δτ is geometry), and the same sign of Δτ with either label made rare, with "
                   "either judge recalibrated (temperatures 1/4..4 and hard labels) and over the "
                   "α grid; [the paper's rule] in brackets"),
    "paper": ("call rule (paper): a direction needs a significant GATE and p(Δτ ≠ 0) <= "
              "{level:.4g}; 'undetermined (?)': a GATE is significant, Δτ is not"),
}


def summary(result, out: Path, elapsed: float) -> str:
    """The readable end-of-run summary (classifiers, one line per pair and outcome, plots)."""
    from cage_eval import runs
    from report.explain import P_TESTS, p_name, reasons_of, sentence

    manifest = runs.read_manifest(out)
    cc = result.config.cage
    lines = [f"{result.config.name}: run {manifest['run_id']} written to {out} "
             f"in {elapsed:.0f} s (seed {result.config.seed}, k={cc.k}, alpha={cc.alpha:g}, "
             f"{cc.n_null} null draws, decision null: {cc.null})", "",
             "attribute classifiers (held-out accuracy; |w| of the latent ones):"]
    for row in result.classifier_rows:
        extra = f", |w|={row['weight_norm']:.2f}" if row["space"] == "latent" else ""
        flag = "" if row["separable"] == "yes" else "  NOT SEPARABLE: CAGE unreliable"
        lines.append(f"  {row['attribute']:12s} {row['space']:11s} acc={row['accuracy']:.3f}{extra}{flag}")
    lines += ["", f"{'pair':22s} {'outcome':23s} {'GATE 1->2':>9s} {'GATE 2->1':>9s} "
                  f"{'Δτ':>7s} {'geom.':>7s} {'cos':>6s}  call ({cc.rule} rule) [paper rule]"]
    for d in result.directions:
        call = f"{d.cause} -> {d.effect}" if d.cause else CALL_NAMES[d.direction]
        reasons = "+".join(reasons_of(d.reason, d.outcome))
        reason = f": {reasons}" if reasons and d.direction == "?" else ""
        lines.append(
            f"{d.m1 + ' / ' + d.m2:22s} {d.outcome:23s} {d.gate_12:9.3f} {d.gate_21:9.3f} "
            f"{d.delta_tau:7.3f} {d.delta_tau_geometric:7.3f} {d.cos_normals:6.2f}  "
            f"{call}{reason} [{d.direction_paper}]")
    names = [p_name(c) for c in P_COLUMNS]
    lines += ["", "p-values, each named by what it tests:"]
    lines += [f"  {p_name(c)}: {P_TESTS[c].format(null=cc.null)}" for c in P_COLUMNS[1:]]
    lines += [f"{'pair':22s} {'outcome':23s} " + " ".join(f"{n:>{len(n)}s}" for n in names)]
    for d in result.directions:
        values = [getattr(d, c) for c in P_COLUMNS]
        if d.outcome == "latent":  # eq. 8's reason is its geometry, not the rotation null
            values[-1] = math.nan
        lines.append(f"{d.m1 + ' / ' + d.m2:22s} {d.outcome:23s} " + " ".join(
            f"{'–' if math.isnan(v) else format(v, '.3f'):>{len(n)}s}"
            for n, v in zip(names, values, strict=True)))
    lines += ["", "controls: Δτ with the outcome thresholds moved (both balanced / m1 rare / "
                  "m2 rare), and its sign over the α grid:"]
    for d in result.directions:
        lines.append(
            f"{d.m1 + ' / ' + d.m2:22s} {d.outcome:23s} {d.delta_tau_balanced:+7.3f} "
            f"{d.delta_tau_m1_rare:+7.3f} {d.delta_tau_m2_rare:+7.3f}   "
            f"α-stable {'yes' if d.sign_stable else 'no'}")
    lines += ["", "calibration control: Δτ with each outcome recalibrated (temperatures 1/4..4 and "
                  "hard labels, each attribute on its own; accuracy unchanged):"]
    for d in result.directions:
        lines.append(
            f"{d.m1 + ' / ' + d.m2:22s} {d.outcome:23s} {d.delta_tau_calibration_min:+7.3f} "
            f"({d.calibration_min_at}) .. {d.delta_tau_calibration_max:+7.3f} "
            f"({d.calibration_max_at}); hard labels {d.delta_tau_labels:+.3f}; sign kept "
            f"{'yes' if d.calibration_sign_stable else 'no'}")
    lines += _baseline_lines(result.directions)
    lines += ["", "in words:"] + [f"  {sentence(d)}" for d in result.directions]
    lines += ["", f"plots: {out / runs.PLOTS_DIR}/ (delta_tau__*, null__*, mmd__*)",
              f"tables: {out / runs.DIRECTIONS}, {out / runs.ALPHA_SWEEP}, {out / runs.NULL_DRAWS}"]
    if (out / runs.REPORT).is_file():
        lines.append(f"report: {out / runs.REPORT} (everything on one page; cage-eval report)")
    lines.append(_resolution_line(cc, len(result.directions)))
    lines.append(RULE_LINES[cc.rule].format(level=cc.call_level()))
    if cc.falsified:
        lines.append(f"falsified ([cage] falsified): {cc.falsified}; the controlled rule reports "
                     "its arrows here as '?'")
    lines += _pair_lines(manifest.get("pairs"), out)
    return "\n".join(lines)


#: The p-value columns of the summary, in the order of the report's Calls table.
P_COLUMNS = ("p_gate_12", "p_gate_21", "p_delta_tau", "p_delta_tau_centred", "p_delta_tau_rotation")


def _baseline_lines(directions) -> list[str]:
    """The causal-discovery baselines: a table of those computed, and the missing ones named
    once with why and how to install them."""
    from cage.run.baselines import INSTALL_HINT

    done = [b.method for d in directions for b in d.baselines if b.available]
    missing = list(dict.fromkeys(b.method for d in directions for b in d.baselines
                                 if not b.available))
    lines: list[str] = []
    if done:
        lines += ["", "causal-discovery baselines on the prior samples' attribute probabilities "
                      "(paper Appendix D; docs/baselines.md):"]
        for d in directions:
            calls = ", ".join(f"{b.method} {b.verdict}" for b in d.baselines if b.available)
            lines.append(f"{d.m1 + ' / ' + d.m2:22s} {d.outcome:23s} {calls}")
    if missing:
        lines += ["", f"causal-discovery baselines: {', '.join(missing)} not computed, their "
                      f"packages are not installed; install them with {INSTALL_HINT} from the "
                      "root of your clone and generate again (docs/baselines.md)"]
    return lines


def _resolution_line(cc, tests: int) -> str:
    """The level each call used (Bonferroni over the run's pairs x outcome variants, or none), how
    the null size was chosen and how small a p-value it can give."""
    resolution = 1.0 / (cc.n_null + 1)
    call = cc.call_level()
    if cc.correction == "bonferroni":
        level = (f"level {cc.level:g} for the study, Bonferroni-corrected over its {tests} pairs x "
                 f"variants: {call:.4g} per call")
    else:
        level = f"level {cc.level:g} per call, not corrected for the study's {tests} pairs x variants"
    how = ("chosen from the study's size (n_null = \"auto\": one draw may beat the observed "
           "statistic and it still passes)" if cc.n_null_auto else "set in [cage] n_null")
    line = (f"p-values: {level}; {cc.n_null} draws per null, {how}, so the smallest possible p "
            f"is {resolution:.4f}")
    n_obs = getattr(cc, "n_null_observation", 0)
    if n_obs and n_obs < cc.n_null and any(o.startswith("observation") for o in cc.outcomes):
        line += (f" (eq. 8); eq. 9 (observation) uses {n_obs} draws per null, smallest p "
                 f"{1.0 / (n_obs + 1):.4f}"
                 + (f", which cannot reach {call:.4g}: raise [cage] n_null_observation"
                    if 1.0 / (n_obs + 1) > call else ""))
    if resolution > call:
        need = auto_n_null(tests, cc.level, cc.correction)
        return line + f"; that cannot reach {call:.4g}: no arrow is possible (n_null >= {need})"
    if 2 * resolution > call:
        need = auto_n_null(tests, cc.level, cc.correction)
        return line + (f"; an arrow must beat every null draw, at the edge of the resolution "
                       f"(n_null >= {need} would leave one draw of room)")
    return line


def _pair_lines(pairs, out: Path) -> list[str]:
    """One line per DAG the counterfactual pairs were made for (experiments that make pairs)."""
    from cage_eval import runs

    if not pairs:
        return []
    lines = ["", f"counterfactual pairs ({pairs['rows']} rows, {pairs['images']} images in "
                 f"{out / runs.IMAGES_DIR}/; DAG source: inferred = called by CAGE, declared = "
                 "[pairs] dags, the known mechanism, not inferred):"]
    for rec in pairs.get("dag_sources", []):
        order = sorted(rec["settings"], key=lambda k: (k != "same_source", k))
        settings = ", ".join(f"{k} {rec['settings'][k]}" for k in order)
        sheets = ", ".join(str(out / s) for s in rec["sheets"])
        lines.append(f"  {rec['dag']:16s} {rec['source']:8s} (CAGE {rec['outcome']}: "
                     f"{rec['cage_call']}, p(Δτ ≠ 0)={rec['p_delta_tau']:.3f}): {rec['rows']} rows "
                     f"({settings}); sheets: {sheets}")
        differences = rec.get("difference") or {}
        for setting in order:
            diff = differences.get(setting) or {}
            if not diff.get("pairs"):
                continue
            ssim = diff.get("median_ssim")
            lines.append(f"  {'':16s} {setting.replace('_', '-')}: the two images of a pair differ "
                         f"by a median {diff['median_mean_abs']:.1f}/255 mean absolute pixel "
                         f"difference (max {diff['max_mean_abs']:.1f}/255)"
                         + (f", median SSIM {ssim:.3f}" if ssim is not None else ""))
    for skip in pairs.get("skipped", []):
        lines.append(f"  {skip['m1'] + ' / ' + skip['m2']:16s} no pairs (CAGE {skip['outcome']}: "
                     f"{skip['cage_call']}, p(Δτ ≠ 0)={skip['p_delta_tau']:.3f})")
    for text in pairs.get("difference_warnings", []):
        lines.append(f"WARNING: pairs people cannot tell apart: {text}")
    return lines


COMMANDS: list[click.Command] = [generate]


def _check_hit_domain(config) -> None:
    """``[hits] domain`` names a wording that hitgen has (the numerics never import hitgen)."""
    hits = config.kind_options.get("hits")
    if not isinstance(hits, dict) or "domain" not in hits:
        return
    from hitgen.texts import DOMAIN_TEXTS

    domain = hits["domain"]
    if domain not in DOMAIN_TEXTS:
        from cage_eval.errors import ConfigError

        raise ConfigError(f"{config.source}: [hits] domain = {domain!r}: choose one of "
                          f"{', '.join(sorted(DOMAIN_TEXTS))} (other wordings: cage-eval hits "
                          "--texts FILE)")
