"""``cage-eval turkle ...``: run a local Turkle server and crowdsource a run in the lab.

Thin commands over :mod:`crowds.turkle.server` (the server process and accounts) and
:mod:`crowds.turkle.backend` (publish, status, collect). Turkle is an optional extra, imported only
inside command bodies. Secrets (admin password, API token, worker passwords) live only in
``HOME/credentials.json`` (mode 0600); no command prints them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from cage_eval.cli.quality import plan_from_options, quality_options
from cage_eval.runs import hit_domain

TOKEN_ENV = "CAGE_EVAL_TURKLE_TOKEN"
HOME_ENV = "CAGE_EVAL_TURKLE_HOME"
DEFAULT_HOME = "turkle_home"

home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_HOME,
    envvar=HOME_ENV,
    show_default=True,
    help=f"Server home directory (database, credentials, log). Env: {HOME_ENV}.",
)
url_option = click.option(
    "--url",
    default=None,
    help="Base URL of the Turkle server [default: the one `turkle serve` runs from --home]. "
    "The API token is sent only there (never to a server named only by a run).",
)


def _api(home: Path, url: str | None):
    """A TurkleAPI for ``url`` (or the server running from ``home``) with the token from the
    env or ``home``. The token goes only to one of those two, never to a URL read from a run."""
    from cage_eval.errors import ConfigError
    from crowds.turkle.api import TurkleAPI
    from crowds.turkle.server import read_credentials, recorded_url

    url = url or recorded_url(home)
    if not url:
        raise ConfigError(f"no Turkle server URL: no server is running from {home} (start it "
                          f"with `cage-eval turkle serve --home {home}`), and no --url was given")
    token = os.environ.get(TOKEN_ENV, "").strip() or read_credentials(home).token
    if not token:
        raise ConfigError(f"{home}/credentials.json has no API token; start the server once with "
                          f"`cage-eval turkle serve --home {home}`, or set {TOKEN_ENV}")
    return TurkleAPI(url, token)


@click.group("turkle")
def turkle() -> None:
    """Crowdsource a run on a local, MTurk-compatible Turkle server (in-lab studies).

    \b
    Typical session (two terminals):
      cage-eval turkle serve --home lab                    # keeps running; Ctrl-C stops it
      cage-eval turkle add-workers --home lab alice bob carol
      cage-eval turkle publish runs/digits --home lab      # one project + one batch
      cage-eval turkle status runs/digits --home lab
      cage-eval turkle collect runs/digits --home lab      # -> runs/digits/results.csv

    Needs the optional extra: pip install -e '.[turkle]'.
    """


@turkle.command("serve")
@home_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Anything but loopback also needs --allowed-host.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="TCP port; 0 picks a free one.")
@click.option("--allowed-host", "allowed_hosts", multiple=True,
              help="Host name workers use to reach a non-loopback server (repeatable).")
@click.option("--behind-https-proxy", is_flag=True,
              help="An HTTPS reverse proxy forwards the --allowed-host names to this loopback "
              "server (docs/prolific.md): secure cookies, X-Forwarded-Proto trusted.")
def serve(home: Path, host: str, port: int, allowed_hosts: tuple[str, ...],
          behind_https_proxy: bool) -> None:
    """Start a Turkle server in the foreground until Ctrl-C.

    Creates the home on first use (SQLite database, secret key, admin account and API token;
    secrets only in HOME/credentials.json, mode 0600) and deletes abandoned assignments every
    15 minutes.

    Example: cage-eval turkle serve --home lab --port 8000
    """
    from cage_eval.errors import BackendError
    from crowds.turkle.server import (
        CREDENTIALS_FILE,
        EXPIRE_INTERVAL_S,
        LOG_FILE,
        expire_abandoned,
        read_credentials,
        start_server,
    )

    if behind_https_proxy and not allowed_hosts:
        from cage_eval.errors import ConfigError

        raise ConfigError("--behind-https-proxy: name the public host name(s) the proxy serves "
                          "with --allowed-host")
    server = start_server(home, host=host, port=port, allowed_hosts=allowed_hosts,
                          behind_proxy=behind_https_proxy)

    def _terminate(signum, frame):  # SIGTERM stops the server like Ctrl-C does
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        admin = read_credentials(server.home).admin_username
        creds = server.home / CREDENTIALS_FILE
        click.echo(f"Turkle is running at {server.url}/  (home {server.home}, "
                   f"log {server.home / LOG_FILE})")
        click.echo(f"Admin:   log in at {server.url}/admin/ as {admin!r}; password and API token "
                   f"are in {creds} (mode 0600)")
        click.echo(f"Workers: cage-eval turkle add-workers --home {home} NAME...  "
                   f"(they log in at {server.url}/login/)")
        click.echo(f"Publish: cage-eval turkle publish RUN --home {home}")
        click.echo("Press Ctrl-C to stop.")
        while True:
            code = server.wait(EXPIRE_INTERVAL_S)
            if code is not None:
                raise BackendError(f"the Turkle server exited with code {code}; see "
                                   f"{server.home / LOG_FILE}")
            expire_abandoned(server.home)
    except KeyboardInterrupt:
        click.echo("Stopping Turkle.")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)
    click.echo("Turkle stopped.")


@turkle.command("add-workers")
@home_option
@url_option
@click.option("--count", type=click.IntRange(0, 1000), default=0,
              help="Also add this many accounts named <prefix>1, <prefix>2, ...")
@click.option("--prefix", default="worker", show_default=True, help="Name prefix for --count.")
@click.argument("names", nargs=-1)
def add_workers_cmd(home: Path, url: str | None, count: int, prefix: str,
                    names: tuple[str, ...]) -> None:
    """Create worker accounts on the server; passwords go to HOME/credentials.json only.

    Idempotent: names that already exist (with a recorded password) are kept as they are.

    Example: cage-eval turkle add-workers --home lab alice bob carol
    """
    from cage_eval.errors import ConfigError
    from crowds.turkle.server import CREDENTIALS_FILE, add_workers, require_turkle

    require_turkle()
    wanted = list(names) + [f"{prefix}{i}" for i in range(1, count + 1)]
    if not wanted:
        raise ConfigError("no worker names; give NAMES or --count N")
    api = _api(home, url)
    done = add_workers(api, home, wanted)
    added = [n for n, created in done if created]
    kept = [n for n, created in done if not created]
    if added:
        click.echo(f"Added {len(added)} worker(s): {', '.join(added)}")
    if kept:
        click.echo(f"Already there: {', '.join(kept)}")
    click.echo(f"Passwords: {home / CREDENTIALS_FILE} (mode 0600); workers log in at "
               f"{api.url}/login/")


@turkle.command("publish")
@click.argument("run", type=click.Path(path_type=Path))
@home_option
@url_option
@click.option("--assignments", type=int, default=3, show_default=True,
              help="Workers per task (Turkle's assignments_per_task).")
@click.option("--hours", type=int, default=24, show_default=True,
              help="Time a worker has for one task, in hours.")
@click.option("--images", type=click.Choice(["data-uri", "server"]), default="data-uri",
              show_default=True,
              help="Inline images in the tasks, or copy them into HOME and serve them.")
@click.option("--domain", default=None,
              help="Question and instruction texts (digits, faces; default: the run's [hits] "
                   "domain, else digits).")
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Directory overriding the built-in HIT templates.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Placement seed, used only if RUN/hit_items.csv does not exist yet.")
@click.option("--attention-rate", type=float, default=0.0, show_default=True,
              help="Attention checks per pair, used only if RUN/hit_items.csv does not exist yet.")
@quality_options
def publish_cmd(run: Path, home: Path, url: str | None, assignments: int, hours: int,
                images: str, domain: str, templates_dir: Path | None, seed: int,
                attention_rate: float, analysis_plan: Path | None,
                min_response_time: float | None, block_list: Path | None) -> None:
    """Publish RUN's HITs as one Turkle project and batch (idempotent: a rerun creates nothing).

    Freezes the analysis plan (RUN/analysis_plan.json) and records the batch in
    RUN/turkle_ledger.sqlite; an interrupted publish resumes where it stopped.

    Example: cage-eval turkle publish runs/digits --home lab --assignments 3
    """
    from crowds.turkle.backend import TurklePublishOptions, publish
    from crowds.turkle.server import require_turkle

    require_turkle()
    options = TurklePublishOptions(assignments=assignments, hours=hours, images=images,
                                   domain=hit_domain(run, domain), templates_dir=templates_dir,
                                   seed=seed,
                                   attention_rate=attention_rate,
                                   analysis_plan=plan_from_options(
                                       analysis_plan, min_response_time, block_list))
    api = _api(home, url)
    result = publish(run, api, options, server_home=home if images == "server" else None,
                     on_step=click.echo)
    if result.created:
        click.echo(f"Published {result.n_tasks} tasks x {result.assignments} assignments: "
                   f"project {result.project_id}, batch {result.batch_id} at {result.url}")
    else:
        click.echo(f"Nothing to do: {run} is already published as batch {result.batch_id} "
                   f"at {result.url}")
    click.echo(f"Workers log in at {result.url}/login/ and start at {result.worker_url}")


@turkle.command("status")
@click.argument("run", type=click.Path(path_type=Path))
@home_option
@url_option
def status_cmd(run: Path, home: Path, url: str | None) -> None:
    """Show how many assignments of RUN's batch are finished.

    Example: cage-eval turkle status runs/digits --home lab
    """
    from crowds.turkle.backend import published, status

    published(run)  # a clear error for an unpublished or MTurk-published run, before any URL
    p = status(run, _api(home, url))
    click.echo(f"Batch {p.batch_id} at {p.url}: {p.finished_assignments}/{p.total_assignments} "
               f"assignments finished, {p.finished_tasks}/{p.total_tasks} tasks complete"
               + (" (done)" if p.complete else ""))


@turkle.command("collect")
@click.argument("run", type=click.Path(path_type=Path))
@home_option
@url_option
def collect_cmd(run: Path, home: Path, url: str | None) -> None:
    """Download RUN's answers into RUN/results.csv (Turkle's results layout, as served).

    Safe to repeat while workers are still busy: each run replaces results.csv atomically with
    everything finished so far. A results.csv of another origin (simulated answers, MTurk's) is
    never replaced: it is kept beside the new one as RUN/results.<origin>.csv, and a line says so.

    Example: cage-eval turkle collect runs/digits --home lab
    """
    from crowds.turkle.backend import collect, published

    published(run)  # a clear error for an unpublished or MTurk-published run, before any URL
    r = collect(run, _api(home, url))
    p = r.progress
    click.echo(f"Wrote {r.path}: {r.rows} answers from {r.workers} worker(s) on "
               f"{r.items_answered}/{p.total_tasks} items "
               f"({p.finished_assignments}/{p.total_assignments} assignments"
               + (", done)" if p.complete else ")"))
    if r.kept_aside is not None:
        click.echo(f"Note: {r.kept_aside.describe('turkle')}", err=True)
    if r.invalid:
        click.echo(f"Warning: {len(r.invalid)} assignment(s) with an invalid answer left out of "
                   f"{r.path.name} (e.g. {r.invalid[0].describe()}); listed in "
                   f"{r.path.parent / 'raw_answers' / 'invalid_answers.csv'}, the whole "
                   f"download is in {r.raw}", err=True)


COMMANDS: list[click.Command] = [turkle]
