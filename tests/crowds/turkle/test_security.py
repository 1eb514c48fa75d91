"""The Turkle admin token goes only to the server of the home (or an explicit --url), never to
one a run names; `turkle serve` never takes another program on its port for its server."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from crowd_fixtures import make_run_dir

from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import BackendError
from crowds.turkle import server as turkle_server
from crowds.turkle.ledger import PUBLISHED, Publication, TurkleLedger, utc_now
from hitgen.items import build_hit_items, write_hit_items

TOKEN = "c0ffee" * 6 + "0000"


class Listener:
    """A local HTTP listener that answers 200 to everything and records what it was sent."""

    def __init__(self) -> None:
        seen = self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                seen.append((self.path, dict(self.headers)))
                body = b'{"results": [], "next": null}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    srv = Listener()
    yield srv
    srv.close()


@pytest.fixture
def home(tmp_path):
    """A server home with an admin token, as `turkle serve` leaves it (no server running)."""
    home = turkle_server.init_home(tmp_path / "home")
    creds = turkle_server.read_credentials(home)
    creds.token = TOKEN
    turkle_server.write_credentials(home, creds)
    return home


def _published_to(tmp_path, url: str):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=1)
    write_hit_items(run, build_hit_items(run))
    with TurkleLedger.open(run, create=True) as ledger:
        ledger.start(Publication(
            run_id="5e1f0c2a9b7d4e33", server_url=url, project_name="p", batch_name="b",
            project_id=1, batch_id=1, assignments_per_task=3, allotted_hours=24,
            images="data-uri", n_tasks=4, input_sha256="0", template_sha256="0", state=PUBLISHED,
            created_at=utc_now(), updated_at=utc_now()))
    return run


@pytest.mark.parametrize("command", ["status", "collect"])
def test_the_token_never_goes_to_the_server_a_run_names(tmp_path, home, listener, command):
    run = _published_to(tmp_path, listener.url)
    result = CliRunner().invoke(cli, ["turkle", command, str(run), "--home", str(home)])
    assert result.exit_code == 1
    assert result.output == (f"Error: no Turkle server URL: no server is running from {home} "
                             f"(start it with `cage-eval turkle serve --home {home}`), and no "
                             "--url was given\n")
    # With a server running from the home, the run's other server is refused, unasked.
    (home / turkle_server.SERVER_FILE).write_text(
        f'{{"url": "http://127.0.0.1:{turkle_server.free_port()}", "pid": 1}}\n')
    result = CliRunner().invoke(cli, ["turkle", command, str(run), "--home", str(home)])
    assert result.exit_code == 1
    assert f"the run was published to '{listener.url}', not to http://127.0.0.1:" in result.output
    assert "the token is sent only to the server of --home or to an explicit --url" in result.output
    assert listener.requests == []  # (before the fix: GET .../progress/ with the token)
    assert not (run / runs.RESULTS).exists()


def test_pagination_links_to_another_host_are_not_followed(listener):
    from crowds.turkle.api import TurkleAPI

    api = TurkleAPI("http://127.0.0.1:9", TOKEN)
    with pytest.raises(BackendError, match="refusing to send the API token to"):
        api._json("GET", f"{listener.url}/api/users/?page=2")
    assert listener.requests == []


def test_mturk_and_turkle_commands_point_to_each_other(tmp_path, home):
    run = _published_to(tmp_path, "http://127.0.0.1:9")
    result = CliRunner().invoke(cli, ["collect", str(run)])
    assert result.exit_code == 1
    assert result.output == (f"Error: {run / runs.LEDGER}: missing: this run was published on a "
                             f"local Turkle server ({runs.TURKLE_LEDGER}), not on MTurk; use "
                             f"`cage-eval turkle status {run}` and `cage-eval turkle collect "
                             f"{run}`\n")
    other = make_run_dir(tmp_path / "mturk_run", pairs_per_cell=1)
    (other / runs.LEDGER).write_bytes(b"")
    for command in ("status", "collect"):
        result = CliRunner().invoke(cli, ["turkle", command, str(other), "--home", str(home)])
        assert result.exit_code == 1
        assert result.output == (f"Error: {other / runs.TURKLE_LEDGER}: missing: this run was "
                                 f"published on MTurk ({runs.LEDGER}), not on Turkle; use "
                                 f"`cage-eval status {other}` and `cage-eval collect {other}`\n")


# --------------------------------------------------------------------------- serve


def test_serve_refuses_a_port_another_program_listens_on(tmp_path, listener):
    pytest.importorskip("turkle", reason="Turkle is not installed: pip install -e '.[turkle]'")
    home = tmp_path / "home"
    with pytest.raises(BackendError) as err:
        server = turkle_server.start_server(home, port=listener.port, timeout=60)
        server.stop()  # (only reached when the squatter was taken for Turkle)
    assert str(err.value).startswith(f"127.0.0.1:{listener.port} is already in use by another "
                                     "program (")
    assert not (home / turkle_server.SERVER_FILE).exists()
    result = CliRunner().invoke(cli, ["turkle", "serve", "--home", str(home),
                                      "--port", str(listener.port)])
    assert result.exit_code == 1 and "Turkle is running" not in result.output
    assert result.output.startswith(f"Error: 127.0.0.1:{listener.port} is already in use")


def test_readiness_needs_the_value_given_to_the_new_server(listener):
    """Something that answers 200 everywhere is not the server just started."""
    assert not turkle_server._ready(listener.url, "f" * 32)
    assert listener.requests and listener.requests[0][0] == turkle_server.INSTANCE_PATH
