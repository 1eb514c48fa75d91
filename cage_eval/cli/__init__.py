"""The ``cage-eval`` command line: a thin shell over the libraries.

Each group of commands lives in its own module (``cage_eval/cli/<group>.py``) and exports ``COMMANDS``; this file
only assembles them and turns user-facing errors into ``Error: ...`` and exit code 1. Heavy imports
(torch, pandas, boto3) happen inside command bodies, so ``cage-eval --help`` stays fast.
"""

from __future__ import annotations

import sys
import traceback
import warnings

import click

from cage_eval import __version__
from cage_eval.cli import (
    analyze,
    crowd,
    generate,
    hits,
    prolific,
    report,
    simulate,
    train,
    turkle,
)
from cage_eval.errors import CageEvalError, CageEvalWarning

__all__ = ["CageGroup", "cli", "main"]


def _warning_printer(previous):
    """A ``warnings.showwarning`` that prints a :class:`CageEvalWarning` (a library telling the
    user something) as one ``Warning: ...`` line and leaves the others to ``previous``."""

    def show(message, category, *args, **kwargs):
        if issubclass(category, CageEvalWarning):
            click.echo(f"Warning: {message}", err=True)
        else:
            previous(message, category, *args, **kwargs)

    return show


#: Set by ``cage-eval --debug`` for the command being run: errors come with their traceback.
_DEBUG = {"on": False}


class CageGroup(click.Group):
    """A click group that reports every user mistake as ``Error: ...`` with exit code 1 (after
    its traceback, with ``--debug``), and every :class:`CageEvalWarning` of the libraries as one
    ``Warning: ...`` line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _DEBUG["on"] = False
        with warnings.catch_warnings():
            warnings.simplefilter("always", CageEvalWarning)
            warnings.showwarning = _warning_printer(warnings.showwarning)
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)

    def _main(self, args, prog_name, complete_var, standalone_mode, **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("Aborted: nothing more was done.", err=True)
            sys.exit(1)
        except click.ClickException as exc:
            exc.show()
            sys.exit(1)
        except CageEvalError as exc:
            if _DEBUG["on"]:
                click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing more was done.", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=CageGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cage-eval")
@click.option("--quiet", "-q", is_flag=True, default=False,
              help="No progress lines or bars on stderr (results and errors still print).")
@click.option("--debug", is_flag=True, default=False,
              help="Print the traceback above an Error: line (e.g. of your own generator's "
                   "exception).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """CAGE end to end: probe a generator for causal directions, make counterfactual image
    pairs, ask people which looks more real, and analyse their answers.

    Long steps report progress on stderr: a line per stage with its elapsed time, and bars when
    stderr is a terminal; --quiet silences both. A mistake is one Error: line; --debug adds the
    traceback above it (for an exception of your own generator, classifier or encoder).

    \b
    Typical session:
      cage-eval generate --out runs/digits        # CAGE + pairs + runs/digits/report.html
      cage-eval publish runs/digits --sandbox --reward 0.05 --lifetime 3d \\
          --duration 10m --auto-approve 3d        # HITs on the MTurk sandbox
      cage-eval collect runs/digits               # answers -> runs/digits/results.csv
      cage-eval analyze runs/digits/results.csv   # Table 2
      cage-eval report runs/digits                # everything on one HTML page

    \b
    Without MTurk: `cage-eval simulate RUN` (simulated answers, to try the analysis) or
    `cage-eval turkle ...` (a local server for in-lab studies). Every command's --help has
    examples that run as written.
    """
    from cage_eval import progress
    from cage_eval.cli.console import Console

    _DEBUG["on"] = debug
    ctx.with_resource(progress.use(Console(quiet=quiet)))


for _module in (generate, train, hits, crowd, turkle, prolific, simulate, analyze, report):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="cage-eval")


if __name__ == "__main__":  # pragma: no cover
    main()
