"""``cage-eval prolific ...``: recruit a run's participants on Prolific; the tasks are served by
the embedded Turkle server's Prolific gateway.

Thin commands over :mod:`crowds.prolific` (Prolific's side) and :mod:`crowds.turkle.host` (the
tasks' side), wired together here. The API token comes only from ``PROLIFIC_TOKEN`` and is
never written anywhere.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from cage_eval.cli.quality import plan_from_options, plan_lines, quality_options
from cage_eval.cli.turkle import home_option, url_option

API_URL_ENV = "CAGE_EVAL_PROLIFIC_API_URL"
WORKSPACE_ENV = "PROLIFIC_WORKSPACE"
DEFAULT_FEE_RATE = "0.333"

api_url_option = click.option(
    "--api-url", default="https://api.prolific.com", envvar=API_URL_ENV, show_default=True,
    help=f"Prolific's API (env {API_URL_ENV}). The token (env PROLIFIC_TOKEN) goes only there.")


def _prolific(api_url: str):
    from crowds.prolific.api import TOKEN_ENV, ProlificAPI

    return ProlificAPI(os.environ.get(TOKEN_ENV, "").strip(), base_url=api_url)


def _host(home: Path, url: str | None, *, images: str = "data-uri"):
    from cage_eval.cli.turkle import _api
    from crowds.turkle.host import TurkleTaskHost
    from crowds.turkle.server import require_turkle

    require_turkle()
    return TurkleTaskHost(_api(home, url), server_home=home if images == "server" else None)


def _confirm(yes: bool):
    return lambda question: yes or click.confirm(question, default=False)


def _n_tasks(run: Path, seed: int, attention_rate: float) -> tuple[int, int]:
    """The run's HITs and, among them, catch trials (attention checks)."""
    from cage_eval import runs
    from hitgen.items import build_hit_items, read_hit_items

    if (run / runs.HIT_ITEMS).exists():
        items = read_hit_items(run)
    else:
        items = build_hit_items(run, seed=seed, attention_rate=attention_rate)
    return len(items), sum(1 for it in items if it.kind == "attention")


@click.group("prolific")
def prolific() -> None:
    """Recruit a run's participants on Prolific; they answer on your Turkle server.

    \b
    Typical session (the server reachable at an HTTPS address, docs/prolific.md):
      export PROLIFIC_TOKEN=...                         # never written anywhere
      cage-eval turkle serve --home lab --allowed-host study.example.org --behind-https-proxy
      cage-eval prolific publish runs/digits --home lab --public-url https://study.example.org \\
          --reward 1.50 --minutes 10 --places 10 --tasks-per-participant 20 --dry-run
      cage-eval prolific publish runs/digits --home lab --public-url https://study.example.org \\
          --reward 1.50 --minutes 10 --places 10 --tasks-per-participant 20
      cage-eval prolific status runs/digits --home lab
      cage-eval prolific collect runs/digits --home lab # -> runs/digits/results.csv
      cage-eval prolific review runs/digits
      cage-eval prolific bonus runs/digits --csv bonuses.csv
    """


@prolific.command("publish")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@home_option
@url_option
@api_url_option
@click.option("--public-url", required=True,
              help="HTTPS base URL participants reach the Turkle server at.")
@click.option("--reward", required=True, metavar="AMOUNT",
              help="Pay per participant in pounds/dollars, e.g. 1.50.")
@click.option("--currency", type=click.Choice(["GBP", "USD"]), default="GBP", show_default=True,
              help="The workspace's currency (checked against its balance).")
@click.option("--minutes", type=int, required=True,
              help="Estimated completion time (Prolific's estimated_completion_time).")
@click.option("--places", type=int, required=True,
              help="Participants to recruit now (the pilot); only an explicit rerun raises it.")
@click.option("--tasks-per-participant", type=int, required=True,
              help="HITs each participant answers before the completion page.")
@click.option("--assignments", type=int, default=3, show_default=True,
              help="Distinct participants per HIT.")
@click.option("--hours", type=int, default=2, show_default=True,
              help="Time a participant has for one HIT before it goes back to the pool.")
@click.option("--title", default="Which image looks more real?", show_default=True,
              help="Study name shown on Prolific.")
@click.option("--description", default="Look at pairs of small images and pick, for each pair, "
              "the one that looks more like a real photograph of its kind.", show_default=True,
              help="Study description shown on Prolific.")
@click.option("--device", "devices", multiple=True, default=("desktop",), show_default=True,
              type=click.Choice(["desktop", "tablet", "mobile"]), help="Allowed devices.")
@click.option("--auto-approve", is_flag=True,
              help="Approve completed submissions automatically (default: manual review).")
@click.option("--filter-set", default="", help="A Prolific filter set id (e.g. one that "
              "excludes participants of earlier studies).")
@click.option("--project", default="", help="Prolific project id [default: your default].")
@click.option("--workspace", default=None, envvar=WORKSPACE_ENV,
              help=f"Workspace that pays (env {WORKSPACE_ENV}) [default: the only one].")
@click.option("--completion-page", default="https://app.prolific.com/submissions/complete",
              show_default=True, help="Prolific's completion page (the code is added as ?cc=).")
@click.option("--fee-rate", default=DEFAULT_FEE_RATE, show_default=True,
              help="Fee share for the dry-run estimate; publish uses Prolific's own figure.")
@click.option("--max-cost", default=None, metavar="AMOUNT", help="Refuse above this total.")
@click.option("--allow-low-pay", is_flag=True, help="Allow pay below Prolific's minimum wage.")
@click.option("--images", type=click.Choice(["data-uri", "server"]), default="data-uri",
              show_default=True, help="Inline images, or serve them from the Turkle home.")
@click.option("--domain", default="digits", show_default=True, help="HIT texts (digits, faces).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Placement seed (only when RUN/hit_items.csv does not exist yet).")
@click.option("--attention-rate", type=float, default=0.0, show_default=True,
              help="Attention checks per pair (only when RUN/hit_items.csv does not exist yet).")
@click.option("--below-rejection", type=click.Choice(["approve", "ask-return"]), default=None,
              help="Frozen into the analysis plan: what review does with a participant who "
                   "failed attention checks, too few to be rejected. Default: the plan's "
                   "(approve).")
@quality_options
@click.option("--dry-run", is_flag=True, help="Show the study, its wage and cost; call nothing.")
@click.option("--yes", is_flag=True, help="Publish the pilot without asking.")
def publish_cmd(run, home, url, api_url, public_url, reward, currency, minutes, places,
                tasks_per_participant, assignments, hours, title, description, devices,
                auto_approve, filter_set, project, workspace, completion_page, fee_rate,
                max_cost, allow_low_pay, images, domain, seed, attention_rate, below_rejection,
                analysis_plan, min_response_time, block_list, dry_run, yes):
    """Publish RUN as a Prolific study: a draft first, published after you confirm --places.

    Creates the run's Turkle batch (idempotent), the draft study (idempotent: the ledger
    RUN/prolific_ledger.sqlite records it before and after), registers it with the server's
    gateway and publishes it once confirmed. Rerun with a larger --places to add participants.
    The analysis plan (RUN/analysis_plan.json, with the quality-control rules) is frozen before
    anything is created; a rerun with other values keeps it and warns.

    \b
    Example:
      cage-eval prolific publish runs/digits --home lab --public-url https://study.example.org \\
          --reward 1.50 --minutes 10 --places 10 --tasks-per-participant 20
    """
    from cage_eval.errors import ConfigError
    from crowds.prolific.backend import pick_workspace, prepare
    from crowds.prolific.backend import publish as do_publish
    from crowds.prolific.study import (
        StudySettings,
        check_gateway_url,
        external_url,
        format_minor,
        parse_major,
    )
    from crowds.turkle.backend import TurklePublishOptions

    try:
        rate = Decimal(fee_rate)
    except InvalidOperation:
        raise ConfigError(f"--fee-rate {fee_rate!r}: a share such as 0.333") from None
    if not Decimal(0) <= rate < Decimal(5):
        raise ConfigError(f"--fee-rate {fee_rate}: between 0 and 5")
    settings = StudySettings(
        name=title, description=description, reward=parse_major(reward, what="--reward"),
        currency=currency, minutes=minutes, places=places,
        tasks_per_participant=tasks_per_participant, gateway_url=check_gateway_url(public_url),
        completion_page=completion_page, devices=tuple(devices), auto_approve=auto_approve,
        filter_set_id=filter_set, project=project)
    cap = parse_major(max_cost, what="--max-cost") if max_cost is not None else None
    n_tasks, n_catch = _n_tasks(run, seed, attention_rate)
    requested = plan_from_options(analysis_plan, min_response_time, block_list)
    if below_rejection is not None:
        from analysis.quality import publish_plan

        requested = publish_plan(requested, below_rejection=below_rejection)
    plan = prepare(run, settings, n_tasks=n_tasks, assignments=assignments, fee_rate=rate,
                   max_cost=cap, allow_low_pay=allow_low_pay)
    s = plan.settings
    click.echo(f"Study: {s.places} places x {format_minor(s.reward, s.currency)} for about "
               f"{s.minutes} min = {format_minor(plan.wage * 100, s.currency)}/hour")
    click.echo(f"Tasks: {n_tasks} HITs x {assignments} participants each; "
               f"{s.tasks_per_participant} HITs per participant; {plan.places_for_all} places "
               "cover every HIT")
    click.echo(f"Estimated cost: {plan.cost.describe()} (fee rate {rate}; publish checks "
               "Prolific's own figure against the balance)")
    click.echo(f"Participants start at: {external_url(s.gateway_url)}")
    for line in plan_lines(run, requested, n_catch):
        click.echo(line, err=line.startswith("WARNING"))
    if dry_run:
        click.echo("Dry run: nothing was created.")
        return
    from analysis.plan import freeze_plan
    from analysis.quality import publish_plan

    host = _host(home, url, images=images)
    host.check()
    api = _prolific(api_url)
    ws = pick_workspace(api, workspace)
    frozen = publish_plan(requested, catch_trials=n_catch)
    freeze_plan(run, frozen)  # before the batch and the study: the rules come first
    batch = host.publish(run, TurklePublishOptions(assignments=assignments, hours=hours,
                                                   images=images, domain=domain, seed=seed,
                                                   attention_rate=attention_rate,
                                                   analysis_plan=requested),
                         on_step=click.echo)
    report = do_publish(plan, api, host, batch_id=batch.batch_id, workspace_id=ws,
                        max_cost=cap, confirm=_confirm(yes))
    how = "created" if report.created else "found" if report.adopted else "already recorded"
    click.echo(f"Study {report.study_id} ({how}), registered with the gateway at {host.url}")
    if report.published:
        click.echo(f"Published with {report.places} places.")
    elif report.previously_published:
        click.echo(f"Already published; {report.places} places.")
    else:
        click.echo(f"Left as a draft with {report.places} places; rerun to publish it.")


def _print_reconciliation(rec, run: Path) -> None:
    from crowds.prolific.ledger import ProlificLedger
    from crowds.prolific.study import format_minor

    shown = ", ".join(f"{n} {s}" for s, n in sorted(rec.statuses.items())) or "none yet"
    click.echo(f"Study {rec.study_id}: {rec.places} places; submissions: {shown}")
    with ProlificLedger.open(run) as ledger:
        settings = ledger.settings or {}
    reward, currency = int(settings.get("reward", 0)), str(settings.get("currency", "GBP"))
    approved = rec.statuses.get("APPROVED", 0)
    waiting = rec.statuses.get("AWAITING REVIEW", 0)
    click.echo(f"Rewards (before fees): {format_minor(approved * reward, currency)} approved, "
               f"{format_minor(waiting * reward, currency)} awaiting review, of "
               f"{format_minor(rec.places * reward, currency)} for all places")
    click.echo(f"Gateway: {rec.sessions} session(s), {rec.answered} HIT(s) answered by "
               "submissions that count")
    if rec.released_sessions:
        click.echo(f"Freed the tasks of {rec.released_sessions} returned/timed-out/screened-out "
                   f"submission(s) ({rec.released_assignments} assignment(s)); places unchanged")


@prolific.command("status")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@home_option
@url_option
@api_url_option
def status_cmd(run, home, url, api_url):
    """Reconcile RUN's submissions with the gateway's sessions and show where the study stands.

    Frees the tasks of RETURNED, TIMED-OUT and SCREENED OUT submissions; never changes places.

    Example: cage-eval prolific status runs/digits --home lab
    """
    from crowds.prolific.backend import published_study, reconcile

    published_study(run)
    _print_reconciliation(reconcile(run, _prolific(api_url), _host(home, url)), run)


@prolific.command("collect")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@home_option
@url_option
@api_url_option
def collect_cmd(run, home, url, api_url):
    """Write RUN/results.csv: the answers of submissions that count, with PID and SESSION_ID.

    Example: cage-eval prolific collect runs/digits --home lab
    """
    from crowds.prolific.backend import collect, published_study

    published_study(run)
    r = collect(run, _prolific(api_url), _host(home, url))
    _print_reconciliation(r.reconciliation, run)
    click.echo(f"Wrote {r.path}: {r.rows} answers from {r.participants} participant(s); "
               f"left out {r.dropped_freed} of freed submissions and {r.dropped_unknown} not "
               f"from Prolific; raw download {r.raw}")
    if r.kept_aside is not None:
        click.echo(f"Note: {r.kept_aside.describe('prolific')}", err=True)
    if r.invalid:
        click.echo(f"Warning: {r.invalid} assignment(s) with an invalid answer left out "
                   "(RUN/raw_answers/invalid_answers.csv)", err=True)


@prolific.command("review")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@api_url_option
@click.option("--reject-failed-attention", is_flag=True,
              help="Reject participants who failed at least the frozen plan's "
                   "reject_min_failed_checks (2) attention checks, category FAILED_CHECK.")
@click.option("--reject", "rejects", multiple=True, metavar="SESSION_ID",
              help="Reject this submission (repeatable); needs --category and --message, and "
                   "is refused below the fair-rejection rule.")
@click.option("--category", default=None, help="Prolific rejection category for --reject, e.g. "
                                               "LOW_EFFORT.")
@click.option("--message", default=None,
              help="Why (at least 100 characters; shown to them). For "
                   "--reject-failed-attention the default states their failed checks.")
@click.option("--override-fair-rejection", is_flag=True,
              help="Let --reject reject a participant with fewer failed checks than the plan's "
                   "fair-rejection rule needs (recorded in the ledger).")
@click.option("--dry-run", is_flag=True, help="List the decisions; call nothing that changes.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def review_cmd(run, api_url, reject_failed_attention, rejects, category, message,
               override_fair_rejection, dry_run, yes):
    """Decide RUN's AWAITING REVIEW submissions by the frozen plan's fair-rejection rule.

    Counts each participant's failed attention checks (catch trials) in RUN/results.csv: with
    at least the plan's reject_min_failed_checks (2) they may be rejected
    (--reject-failed-attention); with fewer they are never rejected: approved, or asked to
    return the submission when the plan says below_rejection: ask-return. Only AWAITING REVIEW
    submissions are touched; RETURNED or TIMED-OUT ones never are. Run `cage-eval prolific
    collect` first.

    Example: cage-eval prolific review runs/digits --reject-failed-attention --dry-run
    """
    from cage_eval.errors import ConfigError
    from crowds.prolific.payments import (
        APPROVE,
        REJECT,
        REQUEST_RETURN,
        apply_review,
        plan_review,
    )

    if rejects and (not category or not message):
        raise ConfigError("--reject needs --category and --message")
    if category and not rejects:
        raise ConfigError("--category goes with --reject SESSION_ID (--reject-failed-attention "
                          "uses FAILED_CHECK)")
    api = _prolific(api_url)
    plan = plan_review(run, api, {sid: (category, message) for sid in rejects},
                       reject_failed_attention=reject_failed_attention,
                       message=message if reject_failed_attention else None,
                       override_fair_rejection=override_fair_rejection)
    n = {a: sum(1 for d in plan.decisions if d.action == a)
         for a in (APPROVE, REJECT, REQUEST_RETURN)}
    click.echo(f"Awaiting review: {len(plan.decisions) + len(plan.left)} submission(s) "
               f"({n[APPROVE]} to approve, {n[REJECT]} to reject, {n[REQUEST_RETURN]} asked to "
               f"return, {len(plan.left)} left to you)")
    words = {APPROVE: "approve", REJECT: "reject", REQUEST_RETURN: "return"}
    for d in plan.decisions:
        extra = f" [{d.category}]" if d.action == REJECT else ""
        click.echo(f"  {words[d.action]:7} {d.session_id} (PID {d.pid}){extra}: {d.reason}")
    for sid, why in plan.left:
        click.echo(f"  left    {sid}: {why}")
    if dry_run or not plan.decisions:
        click.echo(f"{len(plan.decisions)} decision(s); nothing was changed.")
        return
    if not _confirm(yes)(f"Approve {n[APPROVE]}, reject {n[REJECT]} and ask {n[REQUEST_RETURN]} "
                         "to return on Prolific?"):
        click.echo("Nothing was changed.")
        return
    made = apply_review(run, api, plan)
    click.echo(f"Reviewed {made} submission(s): approved {n[APPROVE]}, rejected {n[REJECT]}, "
               f"asked {n[REQUEST_RETURN]} to return.")


@prolific.command("bonus")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@api_url_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PID,amount lines; amounts in pounds/dollars (0.50).")
@click.option("--dry-run", is_flag=True, help="Check the CSV and show the total; call nothing.")
@click.option("--yes", is_flag=True, help="Pay without asking.")
def bonus_cmd(run, api_url, csv_path, dry_run, yes):
    """Pay bonuses to RUN's participants in two steps: create (priced by Prolific), then pay.

    The same CSV is never paid twice (the ledger keeps its digest).

    Example: cage-eval prolific bonus runs/digits --csv bonuses.csv
    """
    from crowds.prolific.payments import bonus, read_bonus_csv
    from crowds.prolific.study import format_minor

    plan = read_bonus_csv(csv_path, run)
    click.echo(f"Bonus: {len(plan.rows)} participant(s), "
               f"{format_minor(plan.total, plan.currency)} in all (before fees)")
    if dry_run:
        click.echo("Dry run: nothing was created or paid.")
        return
    result = bonus(run, _prolific(api_url), plan, _confirm(yes))
    state = "paid" if result.paid else "created, not paid (rerun to pay it)"
    click.echo(f"Bonus {result.bonus_id}: {format_minor(result.amount, plan.currency)} + fees "
               f"{format_minor(result.fees, plan.currency)} = "
               f"{format_minor(result.total, plan.currency)}; {state}")


COMMANDS: list[click.Command] = [prolific]
