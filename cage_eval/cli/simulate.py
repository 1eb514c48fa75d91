"""``cage-eval simulate``: fill a run's results.csv from planted preferences (synthetic answers)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("simulate")
@click.argument("run", type=click.Path(path_type=Path, file_okay=False))
@click.option("--p-cause", "preferences", multiple=True, metavar="[TARGET=]P",
              help="Planted probability that an honest annotator prefers the cause-manipulated "
                   "image: P for every cell, SETTING=P, DAG=P or DAG/SETTING=P (repeatable; the "
                   "most specific wins). Cells not named get 0.5 (no preference). Quote it in a shell: '->' redirects.")
@click.option("--annotators", type=click.IntRange(min=1), default=3, show_default=True,
              help="Distinct simulated workers per HIT item.")
@click.option("--workers", type=click.IntRange(min=1), default=20, show_default=True,
              help="Size of the simulated worker pool.")
@click.option("--annotator-sd", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Worker bias: SD of each worker's shift on the logit scale.")
@click.option("--pair-sd", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Pair difficulty: SD of each pair's shift on the logit scale "
                   "(correlated judgements within a pair).")
@click.option("--spammers", type=click.FloatRange(0, 1, max_open=True), default=0.0,
              show_default=True,
              help="Share of the pool answering at random, attention checks included.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--out", "out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write here instead of RUN/results.csv (which is never written for a run "
                   "that was published).")
def simulate(run, preferences, annotators, workers, annotator_sd, pair_sd, spammers, seed, out):
    """Fill RUN/results.csv with SIMULATED answers, to try `analyze` without people.

    Every HIT item of RUN/hit_items.csv (made by `cage-eval hits RUN`) is answered by
    --annotators distinct simulated workers: an honest one prefers the cause-manipulated image
    with the planted probability of its DAG and setting and passes every attention check; a
    spammer answers at random. The file has the layout `cage-eval collect` writes, and every
    row is marked synthetic (SIM- worker, assignment and HIT ids, RequesterAnnotation
    cage-eval:<run_id>;simulated, a SIMULATED title); `analyze` prints a SIMULATED DATA banner
    in every output it writes. Same run, options and seed: the same file.

    \b
    Examples (in this order):
      cage-eval hits runs/digits --attention-rate 0.1
      cage-eval simulate runs/digits --p-cause 'thick->bright=0.75' --spammers 0.1
      cage-eval analyze runs/digits/results.csv
    """
    from cage_eval import runs
    from cage_eval.errors import ConfigError, RunDirError
    from crowds.simulated import CrowdModel, ResultsTaken, parse_preferences, simulate_results
    from hitgen.items import read_hit_items

    runs.read_manifest(run)
    try:
        items = read_hit_items(run)
    except RunDirError as exc:
        if (run / runs.HIT_ITEMS).exists():
            raise
        raise RunDirError(f"{run / runs.HIT_ITEMS}: missing; make the HIT items first with "
                          f"`cage-eval hits {run}` (add --attention-rate 0.1 for attention "
                          "checks)") from exc
    cells = sorted({(it.dag, it.setting) for it in items if it.kind == "pair"})
    try:
        planted = parse_preferences(preferences, cells)
    except ConfigError as exc:
        raise ConfigError(f"--p-cause: {exc}") from None
    try:
        model = CrowdModel(annotators=annotators, workers=workers, annotator_sd=annotator_sd,
                           pair_sd=pair_sd, spammers=spammers, seed=seed)
    except ConfigError as exc:
        raise ConfigError(f"--workers {workers} --annotators {annotators}: {exc}") from None
    try:
        report = simulate_results(run, planted, model, out=out)
    except ResultsTaken as exc:
        raise ResultsTaken(f"{exc} (--out FILE)") from None
    click.echo(f"SIMULATED answers (no people): {report.path}: {report.rows} assignments, "
               f"{report.items} HIT items x {annotators} annotators, {report.attention_items} "
               f"attention checks, {len(report.spammers)} of {workers} workers spammers")
    for (dag, setting), p in report.planted.items():
        k, n = report.observed[(dag, setting)]
        click.echo(f"  {dag:<24} {setting:<17} planted {p:.2f}   drawn {k}/{n} prefer cause")
    click.echo(f"next: cage-eval analyze {report.path}" + ("" if out is None else f" --run {run}"))


COMMANDS: list[click.Command] = [simulate]
