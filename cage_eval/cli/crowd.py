"""``cage-eval`` commands: publish, status, collect, review, expire (Amazon Mechanical Turk).

Thin shells over :mod:`mturk`: options are parsed and validated here, the work and every error
message live in the library. boto3, hitgen and analysis are imported inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path

import click

from cage_eval.cli.quality import plan_from_options, plan_lines, quality_options
from cage_eval.runs import hit_domain

DEFAULT_ASSIGNMENTS = 3
DEFAULT_CONCURRENCY = 16


def _aws_options(func):
    """--profile / --endpoint-url / --region / --retry-mode, the AWS CLI's conventions."""
    func = click.option("--retry-mode", type=click.Choice(["standard", "adaptive"]), default="standard",
                        show_default=True, help="botocore retry mode for throttling and 5xx answers.")(func)
    func = click.option("--region", default=None, help="AWS region (MTurk lives in us-east-1).")(func)
    func = click.option("--endpoint-url", default=None,
                        help="Talk to this MTurk-protocol endpoint instead of AWS's.")(func)
    func = click.option("--profile", default=None,
                        help="Named AWS profile; credentials always come from boto3's own chain.")(func)
    return func


def _run_dir(path: str) -> Path:
    return Path(path)


def _lock(run: Path, activity: str) -> None:
    """Hold the run's lock until the command ends, however it ends (a second process is refused
    with ``Error: RUN is being <activity> by process N``)."""
    from cage_eval import files

    if run.is_dir():
        click.get_current_context().with_resource(files.run_lock(run, activity))


def _client_for_ledger(run: Path, profile, endpoint_url, region, retry_mode, concurrency):
    """An MTurk client for the environment the run's ledger was made in."""
    from mturk.aws import make_client
    from mturk.ledger import Ledger

    with Ledger.open(run) as ledger:
        env = ledger.environment
    client = make_client(sandbox=env != "production", profile=profile, endpoint_url=endpoint_url,
                         region=region, retry_mode=retry_mode, max_pool_connections=concurrency)
    return env, client


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--sandbox/--production", "sandbox", default=True, show_default=True,
              help="MTurk environment. Production spends real money and asks for confirmation.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (production).")
@click.option("--dry-run", is_flag=True, help="Show what would be created and what it costs; call nothing.")
@click.option("--max-cost", default=None, metavar="USD", help="Refuse if the estimate exceeds this.")
@click.option("--reward", required=True, metavar="USD", help="Reward per assignment, e.g. 0.05.")
@click.option("--assignments", type=int, default=DEFAULT_ASSIGNMENTS, show_default=True,
              help="Assignments (distinct workers) per HIT; 10+ needs --allow-10-plus.")
@click.option("--lifetime", required=True, help="How long HITs stay listed, e.g. 3d (30s..365d).")
@click.option("--duration", required=True, help="Time a worker has per assignment, e.g. 10m (30s..365d).")
@click.option("--auto-approve", required=True, help="Auto-approval delay after submit, e.g. 3d (0..30d).")
@click.option("--attention-rate", type=float, default=0.0, show_default=True,
              help="Attention-check HITs per pair HIT (0.1 = one per ten).")
@click.option("--seed", type=int, default=0, show_default=True, help="Top/bottom placement seed.")
@click.option("--domain", default=None,
              help="HIT texts: digits or faces (default: the run's [hits] domain, else digits).")
@click.option("--texts", "texts_file", type=click.Path(dir_okay=False), default=None,
              help="JSON or TOML file with the seven HIT texts (overrides --domain).")
@click.option("--templates", "templates_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="Use the HIT templates in DIR instead of the built-in ones.")
@click.option("--images", type=click.Choice(["data-uri", "s3"]), default="data-uri", show_default=True,
              help="Inline images in the page, or upload them to a private S3 bucket.")
@click.option("--bucket", "--s3-bucket", "bucket", default=None, help="S3 bucket for --images s3.")
@click.option("--s3-prefix", default="cage-eval", show_default=True, help="Key prefix in the bucket.")
@click.option("--s3-endpoint-url", default=None, help="S3-protocol endpoint for --images s3.")
@click.option("--min-approval", type=int, default=95, show_default=True,
              help="Worker approval rate >= this percent (production only).")
@click.option("--min-approved", type=int, default=100, show_default=True,
              help="Worker approved-HIT count >= this (production only).")
@click.option("--locale", "locales", multiple=True, default=("US",), show_default=True,
              help="Worker country (repeatable; production only).")
@click.option("--any-locale", is_flag=True, help="No locale requirement.")
@click.option("--masters", is_flag=True, help="Require Masters workers (+5% fee).")
@click.option("--allow-10-plus", is_flag=True, help="Allow 10+ assignments per HIT (the fee doubles to 40%).")
@click.option("--concurrency", type=int, default=DEFAULT_CONCURRENCY, show_default=True,
              help="Create calls in flight at once.")
@_aws_options
@quality_options
def publish(run, sandbox, yes, dry_run, max_cost, reward, assignments, lifetime, duration,
            auto_approve, attention_rate, seed, domain, texts_file, templates_dir, images, bucket, s3_prefix,
            s3_endpoint_url, min_approval, min_approved, locales, any_locale, masters,
            allow_10_plus, concurrency, profile, endpoint_url, region, retry_mode, analysis_plan,
            min_response_time, block_list):
    """Publish a run's counterfactual pairs as HITs on MTurk (sandbox by default).

    Idempotent and resumable: RUN/ledger.sqlite records every HIT before and after it is
    created, so rerunning the same command after any failure creates exactly the missing HITs.

    \b
    Examples:
      cage-eval publish runs/digits --dry-run --reward 0.05 --lifetime 3d \\
          --duration 10m --auto-approve 3d    # the cost and the study's power; calls nothing
      cage-eval publish runs/digits --sandbox --reward 0.05 --assignments 3 \\
          --lifetime 3d --duration 10m --auto-approve 3d --attention-rate 0.1
    """
    from mturk.costs import parse_money
    from mturk.durations import MAX_AUTO_APPROVAL_S, parse_duration
    from mturk.environments import environment
    from mturk.hits import HitSettings, Qualifications, qualification_requirements
    from mturk.publish import PublishRequest, prepare
    from mturk.publish import publish as do_publish

    run_dir = _run_dir(run)
    if not dry_run:
        _lock(run_dir, "published")
    env = environment(sandbox)
    settings = HitSettings(
        reward=reward,
        assignments=assignments,
        lifetime_s=parse_duration(lifetime, option="--lifetime"),
        duration_s=parse_duration(duration, option="--duration"),
        auto_approve_s=parse_duration(auto_approve, option="--auto-approve", minimum=0,
                                      maximum=MAX_AUTO_APPROVAL_S),
        qualifications=Qualifications(min_approval=min_approval, min_approved=min_approved,
                                      locales=() if any_locale else tuple(locales), masters=masters),
        allow_10_plus=allow_10_plus,
    )
    request = PublishRequest(
        settings=settings, domain=hit_domain(run, domain),
        texts_file=Path(texts_file) if texts_file else None, templates_dir=Path(templates_dir) if templates_dir else None,
        images=images, bucket=bucket, s3_prefix=s3_prefix, attention_rate=attention_rate, seed=seed,
        concurrency=concurrency, max_cost=parse_money(max_cost) if max_cost is not None else None,
        analysis_plan=plan_from_options(analysis_plan, min_response_time, block_list),
    )
    plan = prepare(run_dir, request, env)

    n_pairs = len(plan.items) - plan.n_attention
    click.echo(f"Environment: {env.name} ({endpoint_url or env.endpoint_url})")
    click.echo(f"Run {plan.run_id}: {len(plan.items)} HITs ({n_pairs} pairs, {plan.n_attention} "
               f"attention checks); {len(plan.created)} already published")
    if plan.items_from_file:
        click.echo(f"HIT items: the existing {run_dir / 'hit_items.csv'} (--attention-rate and "
                   "--seed only apply when it is first built)")
    click.echo(f"Estimated cost: {plan.estimate.describe()}")
    for line in plan_lines(run_dir, request.analysis_plan, plan.n_attention):
        click.echo(line, err=line.startswith("WARNING"))
    if plan.created:
        click.echo(f"Still to publish: {plan.remaining.hits} HITs, ${plan.remaining.total:.2f}")
    reqs = qualification_requirements(settings.qualifications, env)
    skipped = "" if env.apply_worker_history_qualifications else \
        " (sandbox: approval-rate, approved-count and locale requirements skipped)"
    click.echo(f"Qualification requirements: {len(reqs)}{skipped}")

    if dry_run:
        _dry_run_details(plan)
        for text in _difference_warnings(plan.run_dir):
            click.echo(f"WARNING: pairs people cannot tell apart: {text}")
        click.echo("Dry run: nothing was created and nothing was spent.")
        return

    if env.is_production and plan.remaining.hits and not yes:
        click.confirm(f"Publish {plan.remaining.hits} HITs on the MTurk PRODUCTION site for an "
                      f"estimated ${plan.remaining.total:.2f} of real money?", abort=True)

    from mturk.aws import make_client

    client = make_client(sandbox=sandbox, profile=profile, endpoint_url=endpoint_url, region=region,
                         retry_mode=retry_mode, max_pool_connections=concurrency)
    s3_client = None
    if images == "s3":
        s3_client = make_client("s3", profile=profile, endpoint_url=s3_endpoint_url, region=region,
                                retry_mode=retry_mode, max_pool_connections=concurrency)
    report = do_publish(plan, client, s3_client=s3_client)
    click.echo(f"HITs: {report.created_total} of {report.total} published ({report.created_now} "
               f"created now, {report.already_existed} already existed, {report.reconciled} "
               f"recovered from an interrupted run)")
    click.echo(f"HIT type: {report.hit_type_id}")
    click.echo(f"Worker preview: {report.preview_url}")


def _difference_warnings(run_dir) -> list[str]:
    """The run's warnings about pairs whose two images look alike (written by generate)."""
    from cage_eval import runs

    try:
        pairs = runs.read_manifest(run_dir).get("pairs") or {}
    except Exception:  # a run without a readable manifest was refused earlier
        return []
    return [str(t) for t in pairs.get("difference_warnings") or []]


def _dry_run_details(plan) -> None:
    """The HIT type, one rendered question's size and the power of the design."""
    import json

    from hitgen.hosting import DataUriHost
    from hitgen.render import html_question, render_mturk_page

    click.echo("HIT type: " + json.dumps(plan.hit_type_args, sort_keys=True))
    if plan.request.images == "data-uri" and plan.items:
        host = DataUriHost(plan.run_dir)
        sizes = []
        for item in plan.items[:20]:
            page = render_mturk_page(item, host.url(item.image_top), host.url(item.image_bottom),
                                     plan.texts, templates_dir=plan.request.templates_dir)
            sizes.append(len(html_question(page).encode("utf-8")))
        click.echo(f"Question XML: up to {max(sizes)} bytes of 65,535 (first {len(sizes)} HITs checked)")
    try:
        from analysis.plan import AnalysisPlan, load_plan
        from analysis.power import power_summary
    except ImportError:  # pragma: no cover - analysis ships with cage-eval
        return
    frozen = load_plan(plan.run_dir) or AnalysisPlan()
    cells: dict[tuple[str, str], int] = {}
    for item in plan.items:
        if item.kind == "pair":
            cells[(item.dag, item.setting)] = cells.get((item.dag, item.setting), 0) + 1
    if cells:
        settings = {s for _, s in cells}
        click.echo(power_summary(plan.n_dags, annotators=plan.request.settings.assignments,
                                 alpha=frozen.alpha, correction=frozen.correction,
                                 family=frozen.family, n_settings=len(settings),
                                 pairs_per_cell=min(cells.values())))


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--offline", is_flag=True, help="Only the ledger's view; no MTurk call.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight at once.")
@_aws_options
def status(run, offline, concurrency, profile, endpoint_url, region, retry_mode):
    """Show a published run's progress and what it has cost so far.

    \b
    Example:
      cage-eval status runs/digits
    """
    from mturk.status import run_status

    run_dir = _run_dir(run)
    client = None
    if not offline:
        _, client = _client_for_ledger(run_dir, profile, endpoint_url, region, retry_mode, concurrency)
    st = run_status(run_dir, client, concurrency=concurrency)
    c = st.ledger_counts
    total = sum(c.values())
    click.echo(f"Environment: {st.environment}")
    click.echo(f"HITs: {c['created']} of {total} published ({c['creating']} uncertain, "
               f"{c['pending'] + c['failed']} not yet created); {st.expired} expired")
    if st.preview_url:
        click.echo(f"Worker preview: {st.preview_url}")
    if st.remote:
        a = st.assignments
        click.echo(f"Assignments: {a['Submitted']} submitted, {a['Approved']} approved, "
                   f"{a['Rejected']} rejected, {st.pending} in progress, {st.available} still available")
        click.echo(f"Cost so far: ${st.spent:.2f} paid, ${st.committed:.2f} committed "
                   f"(of ${st.estimate_total:.2f} if every assignment is approved)")
    else:
        click.echo(f"Estimated total: ${st.estimate_total:.2f} if every assignment is approved")


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight at once.")
@_aws_options
def collect(run, concurrency, profile, endpoint_url, region, retry_mode):
    """Download every assignment into RUN/results.csv (MTurk batch-results columns).

    Raw answers are archived under RUN/raw_answers/. Safe to run repeatedly. A results.csv of
    another origin (simulated answers, Turkle's) is never replaced: it is kept beside the new
    one as RUN/results.<origin>.csv, and a line says so.

    \b
    Example:
      cage-eval collect runs/digits
    """
    from mturk.collect import collect as do_collect

    run_dir = _run_dir(run)
    _lock(run_dir, "collected")
    _, client = _client_for_ledger(run_dir, profile, endpoint_url, region, retry_mode, concurrency)
    report = do_collect(run_dir, client, concurrency=concurrency)
    s = report.by_status
    click.echo(f"Collected {report.assignments} assignments from {report.hits} HITs "
               f"({s['Submitted']} submitted, {s['Approved']} approved, {s['Rejected']} rejected)")
    if report.invalid:
        click.echo(f"Warning: {len(report.invalid)} assignment(s) with an invalid answer left out "
                   f"of {report.results_path.name} (e.g. {report.invalid[0].describe()}); listed in "
                   f"{run_dir / 'raw_answers' / 'invalid_answers.csv'}, raw answers in "
                   f"{run_dir / 'raw_answers'}/", err=True)
    click.echo(f"Wrote {report.results_path}")
    if report.kept_aside is not None:
        click.echo(f"Note: {report.kept_aside.describe('mturk')}", err=True)


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--reject-failed-attention", is_flag=True,
              help="Reject failed attention checks of workers who failed at least the frozen "
                   "plan's reject_min_failed_checks (2: the fair-rejection rule); approve the rest.")
@click.option("--feedback", default=None, help="Reason shown to rejected workers (required to reject).")
@click.option("--dry-run", is_flag=True, help="Show the decisions; approve or reject nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight at once.")
@_aws_options
def review(run, reject_failed_attention, feedback, dry_run, yes, concurrency, profile, endpoint_url,
           region, retry_mode):
    """Approve submitted assignments, or reject those that failed an attention check.

    Rejections follow the frozen plan's fair-rejection rule: a failed check is rejected only when
    its worker failed at least two (the plan's reject_min_failed_checks) of the run's checks; a
    single failure is approved, and the analysis plan decides whether the answers count. Only
    Submitted assignments are touched. Approvals that MTurk is not ready for yet are retried.

    \b
    Example:
      cage-eval review runs/digits --reject-failed-attention \\
          --feedback "The attention check (a clearly damaged image) was answered wrongly."
    """
    from mturk.review import REJECT, apply_review, check_feedback, plan_review

    run_dir = _run_dir(run)
    if not dry_run:
        _lock(run_dir, "reviewed")
    env, client = _client_for_ledger(run_dir, profile, endpoint_url, region, retry_mode, concurrency)
    decisions = plan_review(run_dir, client, reject_failed_attention=reject_failed_attention,
                            concurrency=concurrency)
    rejects = [d for d in decisions if d.action == REJECT]
    spared = [d for d in decisions if d.action != REJECT and d.verdict == "return"
              and d.reason.startswith("attention check failed")]
    if not dry_run:
        check_feedback(decisions, feedback)
    click.echo(f"Submitted assignments: {len(decisions)} ({len(decisions) - len(rejects)} to approve, "
               f"{len(rejects)} to reject)")
    for d in rejects:
        click.echo(f"  reject {d.assignment_id} (worker {d.worker_id}, HIT {d.hit_id}): {d.reason}")
    if reject_failed_attention:
        click.echo(f"Fair-rejection rule: {len(rejects)} failed check(s) rejected, {len(spared)} "
                   "approved because their worker failed too few checks to be rejected")
    for d in spared:
        click.echo(f"  approve {d.assignment_id} (worker {d.worker_id}, HIT {d.hit_id}): {d.reason}")
    if dry_run or not decisions:
        if dry_run:
            click.echo("Dry run: nothing was approved or rejected.")
        return
    if (rejects or env == "production") and not yes:
        click.confirm(f"Approve {len(decisions) - len(rejects)} and reject {len(rejects)} assignments "
                      f"on the MTurk {env}?", abort=True)
    report = apply_review(run_dir, client, decisions, feedback=feedback, concurrency=concurrency)
    click.echo(f"Approved {report.approved}, rejected {report.rejected}")
    if report.failed:
        from cage_eval.errors import BackendError

        aid, error = report.failed[0]
        raise BackendError(f"{len(report.failed)} assignments could not be reviewed (e.g. {aid}: "
                           f"{error}); rerun `cage-eval review` in a few minutes")


@click.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--concurrency", type=int, default=8, show_default=True, help="Calls in flight at once.")
@_aws_options
def expire(run, concurrency, profile, endpoint_url, region, retry_mode):
    """Take a run's HITs off MTurk now (workers can no longer accept them).

    Assignments already accepted can still be submitted; collect and review them as usual.

    \b
    Example:
      cage-eval expire runs/digits
    """
    from mturk.expire import expire as do_expire

    run_dir = _run_dir(run)
    _lock(run_dir, "expired")
    _, client = _client_for_ledger(run_dir, profile, endpoint_url, region, retry_mode, concurrency)
    now, before = do_expire(run_dir, client, concurrency=concurrency)
    click.echo(f"Expired {now} HITs ({before} were already expired)")


COMMANDS: list[click.Command] = [publish, status, collect, review, expire]
