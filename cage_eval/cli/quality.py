"""Quality-control options shared by every ``publish`` command (MTurk, Turkle, Prolific).

:func:`quality_options` adds ``--analysis-plan``, ``--min-response-time`` and ``--block-list``;
:func:`plan_from_options` turns them into the :class:`analysis.plan.AnalysisPlan` that the
publish command freezes (with the number of catch trials added from the HIT items).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def quality_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The pre-registered quality-control options of a ``publish`` command."""
    func = click.option(
        "--block-list", type=click.Path(path_type=Path, dir_okay=False, exists=True),
        default=None,
        help="Participant (worker) ids whose answers never count, one per line or a CSV with a "
             "worker_id / PROLIFIC_PID column; frozen into the analysis plan.")(func)
    func = click.option(
        "--min-response-time", "min_response_time", type=click.FloatRange(min=0), default=None,
        metavar="SECONDS",
        help="Exclude assignments answered faster than this (SubmitTime - AcceptTime); frozen "
             "into the analysis plan. Default: the plan's (0: off).")(func)
    func = click.option(
        "--analysis-plan", "analysis_plan", type=click.Path(path_type=Path, dir_okay=False,
                                                            exists=True),
        default=None,
        help="An analysis_plan.json to freeze instead of the defaults (correction, exclusion "
             "rules and thresholds); the options above change it.")(func)
    return func


def plan_from_options(analysis_plan: Path | None, min_response_time: float | None,
                      block_list: Path | None) -> Any:
    """The plan to freeze (``analysis.plan.AnalysisPlan``), or ``None`` for the defaults."""
    if analysis_plan is None and min_response_time is None and block_list is None:
        return None
    from analysis.plan import read_plan_file
    from analysis.quality import publish_plan

    base = read_plan_file(analysis_plan) if analysis_plan is not None else None
    return publish_plan(base, min_response_time_s=min_response_time, block_list=block_list)


def plan_lines(run_dir: Path, requested: Any, catch_trials: int) -> list[str]:
    """What a publish command tells the researcher about the plan: the rules it freezes (or the
    plan frozen earlier, with a WARNING when the options asked for another one: a frozen plan is
    never rewritten)."""
    from analysis.plan import load_plan, plan_overrides
    from analysis.quality import describe_rules, publish_plan

    wanted = publish_plan(requested, catch_trials=catch_trials)
    frozen = load_plan(run_dir)
    if frozen is None:
        head = "Analysis plan to freeze before the first HIT (pre-registered quality control):"
        return [head, *(f"  {line}" for line in describe_rules(wanted))]
    lines = ["Analysis plan: already frozen in analysis_plan.json (never rewritten):",
             *(f"  {line}" for line in describe_rules(frozen))]
    if requested is not None:
        for name, before, after in plan_overrides(frozen, wanted):
            if name != "catch_trials":
                lines.append(f"WARNING: the frozen plan keeps {name} {before!r}; the option "
                             f"asking for {after!r} is ignored")
    return lines
