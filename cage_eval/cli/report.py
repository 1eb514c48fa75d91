"""``cage-eval report``: one self-contained HTML page about a run.

Thin over :mod:`report.html` (which never imports torch); :func:`refresh_report` is the hook
``generate`` and ``analyze`` call to keep ``RUN/report.html`` up to date.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("run", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the page here instead of RUN/report.html.")
def report(run, out):
    """Write RUN/report.html: everything about a run on one self-contained page.

    The page holds the run's facts, the linear-separability table (paper Table 1), CAGE's
    directions with their controls, diagnostics, baselines and one sentence per pair (paper
    Table 3), the plots, the counterfactual pairs' provenance and contact sheets, and once
    answers are analysed (`cage-eval analyze RUN/results.csv`) Table 2 with the robustness
    columns, workers, exclusions, coverage and the money spent, with a SIMULATED DATA banner
    for simulated answers; then the config, seeds and versions that reproduce it. Every image is
    inlined and nothing is fetched: the file opens from disk, offline, anywhere. `generate` and
    `analyze` rewrite it on their own; run this after `collect` or to write a copy elsewhere.

    \b
    Example:
      cage-eval report runs/digits
      cage-eval report runs/digits --out digits-report.html
    """
    from cage_eval.cli.published import spending
    from report.html import write_report

    path, data = write_report(run, out=out, spending=spending)
    click.echo(f"Wrote {path}: {data.outline()}")


def refresh_report(run: Path, *, required: bool = True) -> Path | None:
    """Rewrite ``RUN/report.html`` after a command changed the run; return its path.

    A run the report cannot read gets a ``WARNING`` line on stderr and ``None``: the command
    that called this has done its own work already. With ``required=False``, a directory with
    neither CAGE's results nor a report (crowd files only: nothing to show, nothing gone stale)
    is skipped without a word.
    """
    from cage_eval import runs
    from cage_eval.cli.published import spending
    from cage_eval.errors import CageEvalError
    from report.html import write_report

    if not required and not any((Path(run) / n).is_file() for n in (runs.REPORT,
                                                                    runs.DIRECTIONS)):
        return None
    try:
        path, _ = write_report(run, spending=spending)
    except CageEvalError as exc:
        click.echo(f"WARNING: {Path(run) / runs.REPORT} not updated: {exc}", err=True)
        return None
    return path


COMMANDS: list[click.Command] = [report]
