"""A real Turkle server on 127.0.0.1: publish a run, three workers answer through Turkle's own
worker pages, collect; idempotent reruns, crash recovery, refused anonymous access, bad input."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sqlite3
import stat

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from turkle_helpers import Worker

from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import BackendError, ConfigError, RunDirError
from crowds.turkle import server as turkle_server
from crowds.turkle.api import TurkleAPI
from crowds.turkle.backend import (
    TURKLE_META_COLUMNS,
    TurklePublishOptions,
    collect,
    publish,
    status,
)
from crowds.turkle.ledger import TurkleLedger
from hitgen.items import read_hit_items

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")
requests = pytest.importorskip("requests", reason="requests comes with the turkle extra")

WORKERS = ("ana", "ben", "cleo")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("turkle_home")
    srv = turkle_server.start_server(home, port=0, timeout=60)
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.running()


@pytest.fixture(scope="module")
def api(server):
    creds = turkle_server.read_credentials(server.home)
    client = TurkleAPI(server.url, creds.token, timeout=20)
    turkle_server.add_workers(client, server.home, list(WORKERS))
    yield client
    client.close()


def _choice(username: str, item_id: str) -> str:
    """A deterministic, worker-dependent answer, so every row can be checked."""
    return "top" if hashlib.sha256(f"{username}|{item_id}".encode()).digest()[0] % 2 else "bottom"


def _count(api: TurkleAPI) -> tuple[int, int]:
    return len(api.projects()), len(api.batches())


# --------------------------------------------------------------------------- security


def test_server_is_on_loopback_and_home_is_private(server):
    assert server.url.startswith("http://127.0.0.1:")
    home = server.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("secret_key", "credentials.json", "server.json"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
    creds = turkle_server.read_credentials(home)
    log = (home / "server.log").read_text()
    secret = (home / "secret_key").read_text().strip()
    for value in (secret, creds.admin_password, creds.token):
        assert value and value not in log
    assert creds.token not in repr(creds) and creds.admin_password not in repr(creds)


def test_anonymous_and_worker_api_access_is_refused(server, api):
    anon = requests.Session()
    for path in ("/api/users/", "/api/batches/", "/api/projects/"):
        assert anon.get(server.url + path, timeout=10).status_code in (401, 403), path
    resp = anon.post(server.url + "/api/users/", json={"username": "mallory", "password": "x1"},
                     timeout=10)
    assert resp.status_code in (401, 403)
    bad = requests.get(server.url + "/api/users/", headers={"Authorization": "Token " + "0" * 40},
                       timeout=10)
    assert bad.status_code in (401, 403)
    # A logged-in worker is not staff: the API (results, user creation) stays closed to them.
    creds = turkle_server.read_credentials(server.home)
    worker = Worker(server.url, WORKERS[0], creds.workers[WORKERS[0]])
    worker.login()
    assert worker.session.get(server.url + "/api/users/", timeout=10).status_code == 403
    assert "mallory" not in {u["username"] for u in api.users()}


# --------------------------------------------------------------------------- the whole flow


@pytest.mark.slow
def test_publish_three_workers_collect(server, api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="a11ce0000000f10", pairs_per_cell=1)
    steps: list[str] = []
    options = TurklePublishOptions(assignments=3, attention_rate=0.25)
    before = _count(api)
    result = publish(run, api, options, on_step=steps.append)
    items = read_hit_items(run)
    assert len(items) == 5 and sum(it.kind == "attention" for it in items) == 1
    assert result.created and not result.adopted and result.n_tasks == 5
    assert _count(api) == (before[0] + 1, before[1] + 1)
    assert (run / runs.ANALYSIS_PLAN).is_file()
    assert any("batch" in s and "created" in s for s in steps)
    batch = api.batch(result.batch_id)
    assert batch["assignments_per_task"] == 3 and batch["login_required"] is True

    progress = status(run, api)
    assert (progress.total_tasks, progress.total_assignments) == (5, 15)
    assert progress.finished_assignments == 0 and not progress.complete

    creds = turkle_server.read_credentials(server.home)
    posted: dict[tuple[str, str], str] = {}
    for name in WORKERS:
        worker = Worker(server.url, name, creds.workers[name])
        worker.login()
        answers = worker.work_all(result.batch_id, lambda item, n=name: _choice(n, item))
        assert sorted(answers) == sorted(it.item_id for it in items), name
        posted.update({(name, item): choice for item, choice in answers.items()})
        # Turkle never gives a worker the same task twice.
        assert worker.next_task(result.batch_id) is None

    done = collect(run, api)
    assert (done.rows, done.workers, done.items_answered, done.invalid_choices) == (15, 3, 5, 0)
    assert done.progress.complete
    data = (run / runs.RESULTS).read_bytes()
    assert data == api.results_csv(result.batch_id)  # byte for byte as Turkle serves it
    reader = csv.DictReader(io.StringIO(data.decode()))
    header = tuple(reader.fieldnames)
    assert header[: len(TURKLE_META_COLUMNS)] == TURKLE_META_COLUMNS
    assert header[len(TURKLE_META_COLUMNS):] == (
        "Input.image_bottom", "Input.image_top", "Input.item_id",
        "Answer.choice", "Answer.elapsed_ms", "Answer.item_id", "Turkle.Username")
    rows = list(reader)
    user_ids = {u["username"]: u["id"] for u in api.users()}
    by_item = {it.item_id: it for it in items}
    seen = set()
    for row in rows:
        name = row["Turkle.Username"]
        assert int(row["WorkerId"]) == user_ids[name]
        assert row["Answer.choice"] == posted[(name, row["Input.item_id"])]
        assert row["Answer.item_id"] == row["Input.item_id"]
        assert row["Answer.elapsed_ms"] == "1500"
        assert row["MaxAssignments"] == "3" and row["Title"] == "cage-eval a11ce0000000f10"
        assert row["Input.image_top"].startswith("data:image/png;base64,")
        assert re.fullmatch(r"\w{3} \w{3} \d{2} \d{2}:\d{2}:\d{2} UTC \d{4}", row["SubmitTime"])
        assert row["Input.item_id"] in by_item
        seen.add((name, row["Input.item_id"]))
    assert seen == set(posted)

    # Nothing secret in the run directory.
    secrets = [creds.token, creds.admin_password, *creds.workers.values()]
    for path in run.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(s.encode() in blob for s in secrets), path

    # A rerun creates nothing and says so.
    again = publish(run, api, options)
    assert not again.created and again.batch_id == result.batch_id
    assert _count(api) == (before[0] + 1, before[1] + 1)
    with TurkleLedger.open(run) as ledger:
        events = [e for _, e, _ in ledger.events()]
    assert events == ["start", "project-created", "batch-created", "collect", "publish-rerun"]


def test_interrupted_publish_adopts_instead_of_duplicating(api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="c0ffee00000000b", pairs_per_cell=1)
    first = publish(run, api)
    count = _count(api)
    # As if the process died after both create calls but before the ledger recorded them.
    with sqlite3.connect(run / runs.TURKLE_LEDGER) as conn:
        conn.execute("UPDATE publication SET project_id=NULL, batch_id=NULL, state='creating'")
    resumed = publish(run, api)
    assert resumed.created and resumed.adopted
    assert (resumed.project_id, resumed.batch_id) == (first.project_id, first.batch_id)
    assert _count(api) == count
    # Died after the project only: the batch is created once, in the same project.
    run2 = make_run_dir(tmp_path / "run2", run_id="c0ffee00000000c", pairs_per_cell=1)
    publish(run2, api)
    with sqlite3.connect(run2 / runs.TURKLE_LEDGER) as conn:
        batch_id = conn.execute("SELECT batch_id FROM publication").fetchone()[0]
        conn.execute("UPDATE publication SET batch_id=NULL, state='creating'")
    count = _count(api)
    again = publish(run2, api)
    assert again.adopted and again.batch_id == batch_id and _count(api) == count


def test_rerun_with_other_settings_or_server_is_refused(server, api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="5e77170000000aa", pairs_per_cell=1)
    publish(run, api)
    ledger = (run / runs.TURKLE_LEDGER).read_bytes()
    count = _count(api)
    with pytest.raises(ConfigError, match="--assignments 3"):
        publish(run, api, TurklePublishOptions(assignments=5))
    other = TurkleAPI(server.url.replace("127.0.0.1", "localhost"), "x" * 40)
    with pytest.raises(BackendError, match="refused"):  # the token is checked before anything
        publish(run, other)
    token = turkle_server.read_credentials(server.home).token
    with pytest.raises(ConfigError, match="pass --url " + server.url):
        publish(run, TurkleAPI(server.url.replace("127.0.0.1", "localhost"), token))
    assert _count(api) == count
    assert (run / runs.TURKLE_LEDGER).read_bytes() == ledger


# --------------------------------------------------------------------------- bad input


def test_server_not_running_is_a_clear_error_and_changes_nothing(api, tmp_path):
    dead = TurkleAPI(f"http://127.0.0.1:{turkle_server.free_port()}", "t" * 40, timeout=5)
    fresh = make_run_dir(tmp_path / "fresh", run_id="dead00000000001", pairs_per_cell=1)
    with pytest.raises(BackendError, match="cannot connect"):
        publish(fresh, dead)
    assert sorted(p.name for p in fresh.iterdir()) == ["images", "manifest.json", "pairs.csv"]

    run = make_run_dir(tmp_path / "run", run_id="dead00000000002", pairs_per_cell=1)
    published = publish(run, api)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for call in (lambda: publish(run, dead), lambda: status(run, dead),
                 lambda: collect(run, dead)):
        with pytest.raises((BackendError, ConfigError)):
            call()
    wrong_token = TurkleAPI(published.url, "t" * 40, timeout=5)
    with pytest.raises(BackendError, match="refused"):
        collect(run, wrong_token)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before and runs.RESULTS not in after


def test_run_without_pairs_is_refused(api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="0a1b5000000000d", pairs_per_cell=1)
    (run / runs.PAIRS).unlink()
    count = _count(api)
    with pytest.raises(RunDirError, match="pairs.csv: missing"):
        publish(run, api)
    assert not (run / runs.TURKLE_LEDGER).exists() and _count(api) == count
    with pytest.raises(RunDirError, match="publish the run first"):
        status(run, api)


def test_run_published_on_mturk_is_refused(api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="0a1b5000000000e", pairs_per_cell=1)
    (run / runs.LEDGER).write_bytes(b"")
    with pytest.raises(RunDirError, match="published on MTurk"):
        publish(run, api)
    assert not (run / runs.TURKLE_LEDGER).exists()


def test_images_served_by_the_server_need_a_login(server, api, tmp_path):
    run = make_run_dir(tmp_path / "run", run_id="1a9e5000000000f", pairs_per_cell=1)
    with pytest.raises(ConfigError, match="not running"):
        publish(run, api, TurklePublishOptions(assignments=1, images="server"),
                server_home=run)
    result = publish(run, api, TurklePublishOptions(assignments=1, images="server"),
                     server_home=server.home)
    item = read_hit_items(run)[0]
    url = f"{server.url}/cage-images/{item.image_top}"
    anon = requests.get(url, timeout=10, allow_redirects=False)
    assert anon.status_code == 302 and "/login/" in anon.headers["Location"]
    creds = turkle_server.read_credentials(server.home)
    worker = Worker(server.url, WORKERS[1], creds.workers[WORKERS[1]])
    worker.login()
    got = worker.session.get(url, timeout=10)
    assert got.status_code == 200
    assert got.content == (run / runs.IMAGES_DIR / item.image_top).read_bytes()
    assert worker.session.get(f"{server.url}/cage-images/..%2Fsecret_key",
                              timeout=10).status_code == 404
    task = worker.next_task(result.batch_id)
    assert task is not None
    frame = worker.session.get(f"{server.url}/task/{task[0]}/assignment/iframe/{task[1]}/",
                               timeout=10)
    assert frame.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert "/cage-images/" in frame.text and "<form" in frame.text  # Turkle's own form


def test_add_workers_is_idempotent_and_checks_names(server, api):
    again = turkle_server.add_workers(api, server.home, [WORKERS[0], "dora"])
    assert again == [(WORKERS[0], False), ("dora", True)]
    with pytest.raises(ConfigError, match="ASCII"):
        turkle_server.add_workers(api, server.home, ["bad name"])
    with pytest.raises(ConfigError, match="admin"):
        turkle_server.add_workers(api, server.home, ["admin"])
    creds = turkle_server.read_credentials(server.home)
    Worker(server.url, "dora", creds.workers["dora"]).login()
    turkle_server.expire_abandoned(server.home)  # what `serve` runs every 15 minutes


def test_restart_keeps_data_and_credentials(tmp_path):
    home = tmp_path / "home"
    with turkle_server.start_server(home, port=0, timeout=60) as first:
        token = turkle_server.read_credentials(home).token
        TurkleAPI(first.url, token).create_project(
            {"name": "kept", "filename": "k.html", "html_template": "<input name=a>"})
        pid = first.process.pid
    assert not (home / "server.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with turkle_server.start_server(home, port=0, timeout=60) as second:
        assert turkle_server.read_credentials(home).token == token
        assert [p["name"] for p in TurkleAPI(second.url, token).projects()] == ["kept"]


def test_non_ascii_answers_arrive_whole(server, api, tmp_path):
    # Turkle 3.1.0 declares Content-Length in characters; the embedded site corrects it, so a
    # non-ASCII answer does not cut the download short.
    run = make_run_dir(tmp_path / "run", run_id="0a5c110000000aa", pairs_per_cell=1)
    result = publish(run, api, TurklePublishOptions(assignments=1))
    creds = turkle_server.read_credentials(server.home)
    worker = Worker(server.url, WORKERS[2], creds.workers[WORKERS[2]])
    worker.login()
    task_id, assignment_id, item_id = worker.next_task(result.batch_id)
    assert worker.submit(task_id, assignment_id, item_id, "top", elapsed_ms="1500ßé").ok
    done = collect(run, api)
    # Not a number of milliseconds: set aside, but the archived download holds it whole.
    assert done.rows == 0 and [i.field for i in done.invalid] == ["elapsed_ms"]
    text = done.raw.read_text(encoding="utf-8")
    assert '"1500ßé"' in text and text.endswith(f'"{WORKERS[2]}"\n')


def test_an_oversized_or_unknown_answer_never_blocks_collect(server, api, tmp_path):
    """A worker who edits the form (a 200 KB choice, an extra field) is set aside, reported,
    and everyone else's answers are collected and analysable."""
    run = make_run_dir(tmp_path / "run", run_id="0b16a05e0000001", pairs_per_cell=1)
    result = publish(run, api, TurklePublishOptions(assignments=1))
    creds = turkle_server.read_credentials(server.home)
    worker = Worker(server.url, WORKERS[0], creds.workers[WORKERS[0]])
    worker.login()
    huge = "x" * 200_000
    task = worker.next_task(result.batch_id)
    for n in range(4):
        task_id, assignment_id, item_id = task
        if n == 0:
            resp = worker.submit(task_id, assignment_id, item_id, huge)
        elif n == 1:
            resp = worker.session.post(
                f"{server.url}/task/{task_id}/assignment/{assignment_id}/",
                data={"csrfmiddlewaretoken": worker._form_csrf, "choice": "top",
                      "item_id": item_id, "elapsed_ms": "900", "evil": "=1+2" * 100},
                headers={"Referer": f"{server.url}/task/{task_id}/assignment/{assignment_id}/"},
                timeout=20)
        else:
            resp = worker.submit(task_id, assignment_id, item_id, "bottom")
        assert resp.ok
        task = worker._open(resp.url)
    result = CliRunner().invoke(cli, ["turkle", "collect", str(run), "--home", str(server.home)])
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "2 answers from 1 worker(s)" in result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("Warning:"))
    assert warning.startswith("Warning: 2 assignment(s) with an invalid answer left out of "
                              "results.csv (e.g. assignment ")
    assert "choice is 200,000 characters long (at most 64)" in warning and "x" * 41 not in warning
    rows = list(csv.DictReader(io.StringIO((run / runs.RESULTS).read_text())))
    assert [r["Answer.choice"] for r in rows] == ["bottom", "bottom"]
    invalid = list(csv.DictReader(open(run / runs.RAW_ANSWERS_DIR / "invalid_answers.csv")))
    assert [(r["field"], r["problem"][:20]) for r in invalid] == [
        ("choice", "is 200,000 character"), ("'evil'", "is not a field of th")]
    assert huge in (run / runs.RAW_ANSWERS_DIR / f"turkle_batch_{result_batch(run)}.csv").read_text()
    analysed = CliRunner().invoke(cli, ["analyze", str(run / runs.RESULTS), "--n-boot", "0",
                                        "--no-gee", "--quiet"])
    assert analysed.exit_code == 0, analysed.output


def result_batch(run) -> int:
    with TurkleLedger.open(run) as ledger:
        return int(ledger.publication().batch_id)
