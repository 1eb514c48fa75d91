"""Run a real Turkle server on loopback for in-lab studies.

A server home directory holds everything one Turkle server needs::

    HOME/                 mode 0700
      secret_key          Django secret key, mode 0600, generated once, never printed
      turkle.sqlite3      Turkle's database
      credentials.json    mode 0600: admin username, password and API token; worker passwords
      server.json         URL and process id of the running server (removed when it stops)
      server.log          the server's request log
      images/             images of published runs, served to logged-in users at /cage-images/

Django runs only in child processes (``python -m django ...`` with :mod:`crowds.turkle.site` as
settings), so several servers can run from one Python process (tests do) and the calling process
never configures Django. Nothing here prints; errors are :class:`cage_eval.errors.BackendError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cage_eval import files
from cage_eval.errors import BackendError, ConfigError

if TYPE_CHECKING:
    from crowds.turkle.api import TurkleAPI

SECRET_KEY_FILE = "secret_key"
CREDENTIALS_FILE = "credentials.json"
SERVER_FILE = "server.json"
LOG_FILE = "server.log"
IMAGES_DIR = "images"
GITIGNORE_FILE = ".gitignore"
#: Ignores everything in a home cage-eval made (secrets, database, log), as virtual environments do.
GITIGNORE_TEXT = ("# Made by cage-eval: this Turkle home holds secrets (credentials.json, secret_key)"
                  "\n# and the study's database. Never commit it.\n*\n")
ADMIN_USERNAME = "admin"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SETTINGS_MODULE = "crowds.turkle.site"
HOME_ENV = "CAGE_EVAL_TURKLE_HOME"
ALLOWED_HOSTS_ENV = "CAGE_EVAL_TURKLE_ALLOWED_HOSTS"
INSTANCE_ENV = "CAGE_EVAL_TURKLE_INSTANCE"
PROXY_ENV = "CAGE_EVAL_TURKLE_PROXY"
#: Where a server started here answers its instance value (``crowds.turkle.site.INSTANCE_PATH``).
INSTANCE_PATH = "/cage-eval/instance/"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: How often ``serve`` deletes abandoned assignments (Turkle's docs recommend a 15-minute cron).
EXPIRE_INTERVAL_S = 15 * 60

INSTALL_HINT = "Turkle support needs the optional extra: pip install -e '.[turkle]'"


def require_turkle() -> None:
    """Raise :class:`ConfigError` with the install command when Turkle is not installed."""
    import importlib.util

    if importlib.util.find_spec("turkle") is None or importlib.util.find_spec("django") is None:
        raise ConfigError(INSTALL_HINT)


# --------------------------------------------------------------------------- private files


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically with mode 0600 from the first byte."""
    files.atomic_write_text(path, text, mode=0o600)


@dataclass
class Credentials:
    """The contents of ``HOME/credentials.json``: secrets, never logged or printed."""

    admin_username: str
    admin_password: str
    token: str = ""
    workers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "admin": {
                    "username": self.admin_username,
                    "password": self.admin_password,
                    "token": self.token,
                },
                "workers": dict(sorted(self.workers.items())),
            },
            indent=2,
        ) + "\n"

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"Credentials(admin_username={self.admin_username!r}, workers={sorted(self.workers)!r})"


def read_credentials(home: Path) -> Credentials:
    """Read ``HOME/credentials.json``; :class:`BackendError` when missing or malformed."""
    path = Path(home) / CREDENTIALS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        admin = data["admin"]
        return Credentials(
            admin_username=str(admin["username"]),
            admin_password=str(admin["password"]),
            token=str(admin.get("token", "")),
            workers={str(k): str(v) for k, v in data.get("workers", {}).items()},
        )
    except FileNotFoundError:
        raise BackendError(f"{path}: missing; start a server with `cage-eval turkle serve --home "
                           f"{home}` first") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackendError(f"{path}: unreadable or malformed ({exc!r}); fix or delete it") from None


def write_credentials(home: Path, creds: Credentials) -> Path:
    """Write ``HOME/credentials.json`` with mode 0600; return its path."""
    path = Path(home) / CREDENTIALS_FILE
    write_private(path, creds.to_json())
    return path


# --------------------------------------------------------------------------- the home directory


def init_home(home: Path) -> Path:
    """Create the server home (mode 0700) and its secret key (mode 0600) if absent.

    A home cage-eval makes (or made) holds a ``.gitignore`` of ``*``: its secrets and database
    never show in ``git status`` (a directory of the user's own is given none). Returns the
    resolved home path. Idempotent: an existing key and database are kept.
    """
    home = Path(home).expanduser().resolve()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"{home}: exists and is not a directory; choose another --home")
    try:
        key = home / SECRET_KEY_FILE
        ours = not home.exists() or key.exists()
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
        if ours and not (home / GITIGNORE_FILE).exists():
            # Like a virtual environment: a home made inside a clone is never offered to git.
            files.atomic_write_text(home / GITIGNORE_FILE, GITIGNORE_TEXT)
        (home / IMAGES_DIR).mkdir(exist_ok=True)
        if not key.exists():
            write_private(key, secrets.token_urlsafe(50) + "\n")
        if not (home / CREDENTIALS_FILE).exists():
            write_credentials(home, Credentials(ADMIN_USERNAME, secrets.token_urlsafe(18)))
    except PermissionError as exc:
        raise ConfigError(f"{home}: not writable ({exc.strerror}); choose another --home") from None
    return home


def _child_env(home: Path, allowed_hosts: tuple[str, ...] = (), instance: str = "",
               behind_proxy: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env[PROXY_ENV] = "1" if behind_proxy else ""
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    env[HOME_ENV] = str(home)
    env[ALLOWED_HOSTS_ENV] = ",".join(allowed_hosts)
    env[INSTANCE_ENV] = instance
    env["PYTHONUNBUFFERED"] = "1"
    return env


_PROVISION_CODE = """
import django, json, os
django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from crowds.turkle.server import read_credentials, write_credentials
from pathlib import Path
home = Path(os.environ['CAGE_EVAL_TURKLE_HOME'])
call_command('migrate', interactive=False, verbosity=0)
creds = read_credentials(home)
user, _ = User.objects.get_or_create(username=creds.admin_username)
user.is_staff = True
user.is_superuser = True
user.set_password(creds.admin_password)
user.save()
token, _ = Token.objects.get_or_create(user=user)
creds.token = token.key
write_credentials(home, creds)
"""


def provision(home: Path, *, timeout: float = 300.0) -> Credentials:
    """Migrate the database and create the admin user and its API token (idempotent).

    Runs Django in a child process. The admin password comes from ``HOME/credentials.json``
    (generated by :func:`init_home`); the token is written back there. Returns the credentials.
    """
    require_turkle()
    home = init_home(home)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROVISION_CODE],
            env=_child_env(home),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BackendError(f"{home}: setting up the Turkle database took over {timeout:.0f} s; "
                           "is another process holding it?") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BackendError(f"{home}: setting up the Turkle database failed: {tail[0]}")
    return read_credentials(home)


def expire_abandoned(home: Path, *, timeout: float = 120.0) -> None:
    """Delete abandoned task assignments (Turkle's ``expire_assignments`` command)."""
    home = Path(home).resolve()
    proc = subprocess.run(
        [sys.executable, "-m", "django", "expire_assignments"],
        env=_child_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise BackendError(f"{home}: expire_assignments failed: {tail[0]}")


# --------------------------------------------------------------------------- the server process


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`BackendError` when something already listens on ``host:port``.

    Binds the port as the server will (``SO_REUSEADDR``, so a port left in TIME_WAIT by a
    server that just stopped counts as free) and lets it go at once.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise BackendError(f"{host}:{port} is already in use by another program "
                               f"({exc.strerror}); stop it, or choose another --port (0 picks "
                               "a free one)") from None


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@dataclass
class TurkleServer:
    """A running Turkle server process started by :func:`start_server`."""

    home: Path
    host: str
    port: int
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000``."""
        return _url(self.host, self.port)

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the server to exit; its exit code, or ``None`` after ``timeout`` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove ``HOME/server.json``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        info = self.home / SERVER_FILE
        with contextlib.suppress(FileNotFoundError, ValueError, OSError):
            if json.loads(info.read_text(encoding="utf-8")).get("pid") == self.process.pid:
                info.unlink()

    def __enter__(self) -> TurkleServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _ready(url: str, instance: str) -> bool:
    """True once the server at ``url`` answers with ``instance``: it is the one just started,
    not another program on the same port."""
    try:
        with urllib.request.urlopen(f"{url}{INSTANCE_PATH}", timeout=2) as resp:
            return resp.status == 200 and resp.read(200).decode("ascii", "replace") == instance
    except (urllib.error.URLError, OSError):
        return False


def start_server(
    home: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    allowed_hosts: tuple[str, ...] = (),
    behind_proxy: bool = False,
    timeout: float = 90.0,
) -> TurkleServer:
    """Provision ``home`` and start Turkle on ``host:port``; return once it answers HTTP.

    The port must be free before the start (:func:`check_port_free`), and the server that
    answers must give back the random instance value handed to the child process: whatever else
    may listen on the port is never taken for the new server.

    ``port=0`` picks a free port. The server runs ``django runserver --insecure --noreload`` in its
    own process group (static files served for local use, no auto-reloader); its output goes to
    ``HOME/server.log``. Binding a non-loopback ``host`` needs the names clients use in
    ``allowed_hosts``; ``behind_proxy`` trusts an HTTPS reverse proxy in front of a loopback
    server (secure cookies, ``X-Forwarded-Proto``, form posts from the ``allowed_hosts``). Raises :class:`BackendError` if it does not come up within ``timeout`` s.
    """
    require_turkle()
    if host not in LOOPBACK_HOSTS and not allowed_hosts:
        raise ConfigError(f"--host {host}: not a loopback address; also name the host names "
                          "workers will use with --allowed-host (and mind that logins travel "
                          "unencrypted over plain HTTP)")
    if port:
        check_port_free(host, port)  # before the slow provisioning
    home = init_home(home)
    provision(home)
    hosts = tuple(dict.fromkeys((*allowed_hosts, host)))
    attempts = 3 if port == 0 else 1
    last_error = ""
    for _ in range(attempts):
        chosen = port or free_port(host)
        check_port_free(host, chosen)
        instance = secrets.token_hex(16)
        log = open(home / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child process
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "runserver", "--insecure", "--noreload",
                 *(["--ipv6"] if ":" in host else []), _url(host, chosen)[len("http://"):]],
                env=_child_env(home, hosts, instance, behind_proxy),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        server = TurkleServer(home=home, host=host, port=chosen, process=proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(server.url, instance) and proc.poll() is None:
                write_private(
                    home / SERVER_FILE,
                    json.dumps({"url": server.url, "pid": proc.pid}, indent=2) + "\n",
                )
                return server
            time.sleep(0.2)
        if proc.poll() is None:
            server.stop()
            raise BackendError(f"Turkle at {server.url} did not answer within {timeout:.0f} s; "
                               f"see {home / LOG_FILE}")
        last_error = _log_tail(home / LOG_FILE)
        if "already in use" not in last_error:
            break
    raise BackendError(f"Turkle server on {host}:{port or 'a free port'} exited at start: "
                       f"{last_error}")


def recorded_url(home: Path) -> str | None:
    """The URL of the server running from ``home`` (from ``HOME/server.json``), if any."""
    try:
        data = json.loads((Path(home) / SERVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return str(url) if url else None


# --------------------------------------------------------------------------- worker accounts

_USERNAME = re.compile(r"^[A-Za-z0-9_]{1,150}$")


def add_workers(api: TurkleAPI, home: Path, usernames: list[str]) -> list[tuple[str, bool]]:
    """Create worker accounts through the REST API; passwords go to ``HOME/credentials.json``.

    Each password is generated and written to the 0600 credentials file *before* the create call,
    so a crash never leaves an account whose password is lost. Idempotent: a name that already
    exists with a recorded password is skipped. Returns ``(username, created)`` pairs.

    Names are ASCII letters, digits and ``_`` (Turkle's username URL pattern is ``\\w+``, and its
    results download miscounts ``Content-Length`` for non-ASCII text).
    """
    home = Path(home)
    bad = [u for u in usernames if not _USERNAME.match(u)]
    if bad:
        raise ConfigError(f"worker name {bad[0]!r}: use 1-150 ASCII letters, digits or _")
    if len(set(usernames)) != len(usernames):
        raise ConfigError("worker names repeat; give each worker once")
    creds = read_credentials(home)
    if creds.admin_username in usernames:
        raise ConfigError(f"worker name {creds.admin_username!r} is the admin account")
    existing = {u.get("username") for u in api.users()}
    out: list[tuple[str, bool]] = []
    for name in usernames:
        if name in existing:
            if name not in creds.workers:
                raise BackendError(f"Turkle at {api.url}: user {name!r} already exists but its "
                                   f"password is not in {home / CREDENTIALS_FILE}; choose "
                                   "another name")
            out.append((name, False))
            continue
        creds.workers[name] = secrets.token_urlsafe(12)
        write_credentials(home, creds)
        api.create_user(name, creds.workers[name])
        out.append((name, True))
    return out
