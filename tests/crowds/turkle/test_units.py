"""Turkle backend pieces that need no server: options, templates, input CSV, results checks,
the ledger, the server home and its private files."""

from __future__ import annotations

import csv
import io
import sqlite3
import stat

import pytest
from crowd_fixtures import make_run_dir

from cage_eval import runs
from cage_eval.errors import BackendError, ConfigError, RunDirError
from crowds.turkle import server as turkle_server
from crowds.turkle.api import normalise_url
from crowds.turkle.backend import (
    TURKLE_META_COLUMNS,
    TurklePublishOptions,
    check_results_csv,
    input_csv,
    render_template,
)
from crowds.turkle.ledger import CREATING, Publication, TurkleLedger
from hitgen.items import build_hit_items

pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")

HEADER = (*TURKLE_META_COLUMNS, "Input.image_bottom", "Input.image_top", "Input.item_id",
          "Answer.choice", "Answer.elapsed_ms", "Answer.item_id", "Turkle.Username")


def _results(rows: list[dict[str, str]], header=HEADER) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in header})
    return buf.getvalue().encode()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"assignments": 0}, "--assignments 0"),
    ({"assignments": 51}, "--assignments 51"),
    ({"hours": 0}, "--hours 0"),
    ({"images": "s3"}, "--images 's3'"),
])
def test_options_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TurklePublishOptions(**kwargs)


def test_template_is_a_fragment_with_the_contract_fields():
    html = render_template(TurklePublishOptions())
    assert "<form" not in html.lower()
    for field in ("${item_id}", "${image_top}", "${image_bottom}"):
        assert html.count(field) == 1
    for name in ('name="choice"', 'name="item_id"', 'name="elapsed_ms"'):
        assert name in html


def test_template_override_with_a_form_is_refused(tmp_path):
    (tmp_path / "turkle.html.jinja").write_text(
        '<form><input name="choice" value="${item_id}${image_top}${image_bottom}"></form>')
    with pytest.raises(ConfigError, match="form"):
        render_template(TurklePublishOptions(templates_dir=tmp_path))


def test_input_csv_is_url_safe_and_complete(tmp_path):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    items = build_hit_items(run)
    text = input_csv(run, items, TurklePublishOptions(), None)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["item_id"] for r in rows] == [it.item_id for it in items]
    for row in rows:
        for value in row.values():
            assert not set(value) & set("\"'<> \t\r\n`\\")
        assert row["image_top"].startswith("data:image/png;base64,")
    with pytest.raises(ConfigError, match="--home"):
        input_csv(run, items, TurklePublishOptions(images="server"), None)
    home = tmp_path / "home"
    home.mkdir()
    served = input_csv(run, items, TurklePublishOptions(images="server"), home)
    first = next(csv.DictReader(io.StringIO(served)))
    assert first["image_top"] == f"/cage-images/{items[0].image_top}"
    assert (home / "images" / items[0].image_top).read_bytes() == \
        (run / runs.IMAGES_DIR / items[0].image_top).read_bytes()


def test_results_check_counts_and_refuses_foreign_files():
    row = {"WorkerId": "3", "Input.item_id": "h1", "Answer.choice": "top", "Turkle.Username": "a"}
    data = _results([row, {**row, "WorkerId": "4"}, {**row, "Input.item_id": "h2",
                                                     "Answer.choice": "left"}])
    checked = check_results_csv(data, {"h1", "h2"}, source="s")
    assert (checked.rows, checked.workers, checked.items_answered) == (2, 2, 1)
    assert [(i.field, i.problem) for i in checked.invalid] == [("choice", "is 'left', not top or bottom")]
    assert checked.data == _results([row, {**row, "WorkerId": "4"}])  # Turkle's layout, less one
    assert check_results_csv(data[:0] + _results([row]), {"h1"}, source="s").data == _results([row])
    empty = check_results_csv(_results([], TURKLE_META_COLUMNS + ("Turkle.Username",)), set(),
                              source="s")
    assert (empty.rows, empty.workers, empty.items_answered, empty.invalid) == (0, 0, 0, [])
    with pytest.raises(BackendError, match="h2.*another run"):
        check_results_csv(data, {"h1"}, source="s")
    mturk_like = _results([row], ("HITId", "HITTypeId", "Title", "Description"))
    with pytest.raises(BackendError, match="not a Turkle results CSV"):
        check_results_csv(mturk_like, {"h1"}, source="s")
    no_choice = _results([row], tuple(h for h in HEADER if h != "Answer.choice"))
    with pytest.raises(BackendError, match="Answer.choice"):
        check_results_csv(no_choice, {"h1"}, source="s")
    with pytest.raises(BackendError, match="UTF-8"):
        check_results_csv(b"\xff\xfe", set(), source="s")


def _publication(**changes) -> Publication:
    base = dict(run_id="r1", server_url="http://127.0.0.1:1", project_name="cage-eval r1",
                batch_name="cage-eval:r1", project_id=None, batch_id=None,
                assignments_per_task=3, allotted_hours=24, images="data-uri", n_tasks=4,
                input_sha256="a" * 64, template_sha256="b" * 64, state=CREATING,
                created_at="2026-01-01T00:00:00Z", updated_at="2026-01-01T00:00:00Z")
    return Publication(**{**base, **changes})


def test_ledger_round_trip_and_errors(tmp_path):
    with pytest.raises(RunDirError, match="publish the run first"):
        TurkleLedger.open(tmp_path)
    with TurkleLedger.open(tmp_path, create=True) as ledger:
        assert ledger.publication() is None
        ledger.start(_publication())
        ledger.set_project(7, adopted=False)
        ledger.set_batch(9, adopted=True)
    with TurkleLedger.open(tmp_path) as ledger:
        pub = ledger.publication()
        assert (pub.project_id, pub.batch_id, pub.state) == (7, 9, "published")
        assert [e for _, e, _ in ledger.events()] == ["start", "project-created", "batch-adopted"]
        with pytest.raises(sqlite3.IntegrityError):
            ledger.start(_publication())  # one publication per run
    with sqlite3.connect(tmp_path / runs.TURKLE_LEDGER) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(RunDirError, match="schema_version 99"):
        TurkleLedger.open(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / runs.TURKLE_LEDGER).write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RunDirError, match="not a readable ledger"):
        TurkleLedger.open(bad)


def test_home_is_private_and_idempotent(tmp_path):
    home = turkle_server.init_home(tmp_path / "h")
    key = (home / "secret_key").read_text()
    creds = turkle_server.read_credentials(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for name in ("secret_key", "credentials.json"):
        assert stat.S_IMODE((home / name).stat().st_mode) == 0o600
    again = turkle_server.init_home(home)
    assert (again / "secret_key").read_text() == key
    assert turkle_server.read_credentials(home).admin_password == creds.admin_password
    assert creds.admin_password not in repr(creds)
    (home / "credentials.json").write_text("{")
    with pytest.raises(BackendError, match="malformed"):
        turkle_server.read_credentials(home)
    with pytest.raises(BackendError, match="turkle serve"):
        turkle_server.read_credentials(tmp_path / "nowhere")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        turkle_server.init_home(tmp_path / "file")


def test_non_loopback_bind_needs_allowed_hosts(tmp_path):
    with pytest.raises(ConfigError, match="--allowed-host"):
        turkle_server.start_server(tmp_path / "h", host="0.0.0.0", port=0)
    assert not (tmp_path / "h").exists()


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://x", "http://h:1/?a=1", ""])
def test_bad_urls_are_refused(url):
    with pytest.raises(ConfigError, match="--url"):
        normalise_url(url)


def test_url_normalisation():
    assert normalise_url(" http://127.0.0.1:8000/ ") == "http://127.0.0.1:8000"


def test_a_download_cut_short_by_a_character_count_is_refused():
    """Stock Turkle 3.1.0 sends Content-Length in characters; the client must notice."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from crowds.turkle.api import TurkleAPI

    body = '"HITId","Turkle.Username"\n"1","zoë"\n'

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))  # characters, as Turkle does
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        api = TurkleAPI(f"http://127.0.0.1:{httpd.server_address[1]}", "t" * 40, timeout=5)
        with pytest.raises(BackendError, match="incomplete"):
            api.results_csv(1)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
