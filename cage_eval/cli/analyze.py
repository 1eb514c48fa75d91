"""``cage-eval`` commands: analyze, power.

Thin shells over :mod:`analysis`; pandas, scipy and statsmodels are imported inside the command
bodies so ``cage-eval --help`` stays fast (and nothing here ever imports torch).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("analyze")
@click.argument("results", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Run directory (made by `cage-eval generate`). Default: the directory holding "
                   "RESULTS, or the run named by its Input.run_id / RequesterAnnotation.")
@click.option("--format", "fmt", type=click.Choice(["auto", "mturk", "batch", "turkle", "tidy"]),
              default="auto", show_default=True,
              help="Layout of RESULTS: `cage-eval collect` output (mturk), the requester "
                   "website's Batch_*_batch_results.csv (batch), Turkle's results CSV (turkle), "
                   "or the tidy format (dag, setting, pair_id, worker_id, preferred).")
@click.option("--correction", type=click.Choice(["bonferroni", "holm", "none"]), default=None,
              help="Multiple-testing correction. Default: the run's frozen plan (else bonferroni).")
@click.option("--family", type=click.Choice(["setting", "all"]), default=None,
              help="Correction family: each setting's DAGs (the paper) or all cells. "
                   "Default: the frozen plan (else setting).")
@click.option("--alpha", type=float, default=None,
              help="Family-wise significance level. Default: the frozen plan (else 0.05).")
@click.option("--attention-min-accuracy", type=float, default=None,
              help="Exclude workers whose attention-check accuracy is below this share. "
                   "Default: the frozen plan (else 0.75).")
@click.option("--keep-rejected/--exclude-rejected", "keep_rejected", default=None,
              help="Count rejected assignments or not. Default: the frozen plan (else exclude).")
@click.option("--duplicates", type=click.Choice(["keep-first", "keep-all"]), default=None,
              help="When one worker judged a pair twice: count only the first, or all. "
                   "Default: the frozen plan (else keep-first).")
@click.option("--min-response-time", "min_response_time", type=click.FloatRange(min=0),
              default=None, metavar="SECONDS",
              help="Exclude assignments answered faster than this (0: off). "
                   "Default: the frozen plan (else 0).")
@click.option("--duplicate-participants", type=click.Choice(["exclude-later", "keep"]),
              default=None,
              help="A participant seen in an earlier study of the run, or sharing a hashed IP "
                   "with an earlier one: drop the later answers, or only report them. "
                   "Default: the frozen plan (else exclude-later).")
@click.option("--plan", "plan_file", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              help="Follow this analysis_plan.json instead of the run's (e.g. for tidy files).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write table2.{csv,md,tex}, workers.csv and analysis.json. "
                   "Default: an `analysis` directory next to RESULTS.")
@click.option("--n-boot", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Cluster-bootstrap draws per cell (pair and worker); 0 skips the bootstraps.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Bootstrap seed (0 or more).")
@click.option("--gee/--no-gee", default=True, show_default=True,
              help="Fit the exchangeable GEE robustness check.")
@click.option("--drop-unknown", is_flag=True,
              help="Set aside (and report) rows whose item or pair is not in the run, instead "
                   "of stopping with an error.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the paths written.")
def analyze(results, run_dir, fmt, correction, family, alpha, attention_min_accuracy,
            keep_rejected, duplicates, min_response_time, duplicate_participants, plan_file,
            out_dir, n_boot, seed, gee, drop_unknown, quiet):
    """Turn crowd answers into the paper's Table 2 (with robustness checks).

    Joins RESULTS with the run's blinding map to learn which displayed image was the
    cause-manipulated one, applies the frozen analysis plan (test, correction, family, alpha,
    exclusion rules), and reports per DAG and setting the judgements preferring the cause image
    (e.g. 231/300), the exact two-sided binomial test, a star when significant after correction,
    Clopper-Pearson intervals, a majority vote per pair, an exchangeable GEE, cluster-bootstrap
    intervals, Fleiss'/Randolph's kappa and a position-bias test. Options that depart from the
    frozen plan are reported as WARNING lines, and so are answers that cover only part of the
    run (coverage per DAG and setting: pairs and assignments answered out of planned). A file
    with no answers yet is refused ("0 of N assignments answered yet"). Answers made by
    `cage-eval simulate` are flagged with a SIMULATED DATA banner in every output.

    \b
    Examples:
      cage-eval analyze runs/digits/results.csv    # what `collect` wrote
      cage-eval analyze Batch_5012345_batch_results.csv --run runs/digits --correction holm
                                                   # a download from the requester website
      cage-eval analyze prolific.csv --format tidy --out tables/
                                                   # answers from elsewhere, tidy columns
    """
    from analysis.report import AnalysisOptions, analyze_file
    from analysis.tables import render_text, write_outputs
    from cage_eval import runs
    from cage_eval.cli.published import assignments_per_item

    overrides = {
        "correction": correction, "family": family, "alpha": alpha,
        "attention_min_accuracy": attention_min_accuracy,
        "exclude_rejected": None if keep_rejected is None else not keep_rejected,
        "duplicates": duplicates,
        "min_response_time_s": min_response_time,
        "duplicate_participants": duplicate_participants,
    }
    options = AnalysisOptions(fmt=fmt, n_boot=n_boot, random_state=seed, gee=gee,
                              drop_unknown=drop_unknown)
    result = analyze_file(results, run_dir=run_dir, plan_file=plan_file, overrides=overrides,
                          options=options, planned=assignments_per_item)
    target = out_dir if out_dir is not None else results.parent / runs.ANALYSIS_DIR
    paths = write_outputs(result, target)
    text = render_text(result)
    if not quiet:
        click.echo(text)
    for line in text.splitlines():
        if line.startswith("WARNING"):
            click.echo(line, err=True)
    if result.banner is not None:
        click.echo(result.banner, err=True)
    if result.run_dir is not None and (
            target.resolve() == (result.run_dir / runs.ANALYSIS_DIR).resolve()):
        from cage_eval.cli.report import refresh_report

        report = refresh_report(target.parent, required=False)  # the page shows RUN/analysis
        if report is not None:
            paths.append(report)
    click.echo("Wrote " + ", ".join(str(p) for p in paths))


@click.command("power")
@click.option("--run", "run_dir", type=click.Path(path_type=Path, file_okay=False, exists=True),
              help="Take the number of DAGs, the pairs per cell and the frozen plan from a run.")
@click.option("--dags", type=click.IntRange(min=1), default=None,
              help="DAGs per setting (default: from --run, else 1).")
@click.option("--p-expected", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.65, show_default=True,
              help="Expected share of judgements preferring the cause-manipulated image.")
@click.option("--annotators", type=click.IntRange(min=1), default=3, show_default=True,
              help="Distinct annotators per pair.")
@click.option("--alpha", type=float, default=None, help="Family-wise level (default: plan, 0.05).")
@click.option("--correction", type=click.Choice(["bonferroni", "holm", "none"]), default=None,
              help="Correction (default: the run's frozen plan, else bonferroni).")
@click.option("--family", type=click.Choice(["setting", "all"]), default=None,
              help="Correction family (default: the run's frozen plan, else setting).")
@click.option("--target-power", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.8, show_default=True, help="Power to reach.")
@click.option("--icc", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True, help="Within-pair correlation of judgements (design effect).")
@click.option("--pairs", "pairs_per_cell", type=click.IntRange(min=1), default=None,
              help="Also show the power at this many pairs per cell (default: from --run).")
def power(run_dir, dags, p_expected, annotators, alpha, correction, family, target_power, icc,
          pairs_per_cell):
    """Pairs and annotators needed for a preference study (exact binomial power).

    For an expected preference rate, prints how many pairs per DAG and setting give the target
    power for the exact two-sided binomial test at the per-test level of the chosen correction,
    pooling all judgements (the paper's test) and by majority vote per pair.

    \b
    Example:
      cage-eval power --dags 4 --p-expected 0.6 --annotators 3
      cage-eval power --run runs/digits
    """
    from analysis.join import run_design
    from analysis.plan import AnalysisPlan, load_plan
    from analysis.power import power_summary

    plan = AnalysisPlan()
    n_settings = 2
    if run_dir is not None:
        n_dags, n_settings, smallest = run_design(run_dir)
        dags = dags if dags is not None else n_dags
        pairs_per_cell = pairs_per_cell if pairs_per_cell is not None else smallest
        plan = load_plan(run_dir) or plan
    plan = plan.replace(**{k: v for k, v in {"alpha": alpha, "correction": correction,
                                              "family": family}.items() if v is not None})
    click.echo(power_summary(
        dags or 1, p_expected=p_expected, annotators=annotators, alpha=plan.alpha,
        correction=plan.correction, target_power=target_power, family=plan.family,
        n_settings=n_settings, icc=icc, pairs_per_cell=pairs_per_cell))


COMMANDS: list[click.Command] = [analyze, power]
