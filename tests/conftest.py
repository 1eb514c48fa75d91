"""Fixtures shared by several test modules (helpers that are not fixtures live in
``tests/support/``, importable by bare name through pytest's ``pythonpath``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from crowd_fixtures import make_run_dir
from fake_mturk import FakeMTurk
from mturk_helpers import aws_environment


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-protocol server (moto's server mode) on 127.0.0.1, one per test module."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def driver():
    """A headless Chromium WebDriver (browser_fixtures.chromium), one per test module; mark the
    module with ``browser_fixtures.BROWSER_MARKS``."""
    from browser_fixtures import chromium

    with chromium() as drv:
        yield drv


#: A digits run small enough for tests (one pair, a handful of counterfactual pairs): about a
#: minute on 2 busy cores, most of it building the dataset.
TINY_DIGITS = (
    "cage.k=200", "cage.n_null=5", "cage.k_null_observation=50", "cage.alphas=[1.0, 2.0]",
    "cage.alpha=1.0", "cage.mmd_n=40", "cage.mmd_permutations=10", "cage.min_accuracy=0.5",
    'cage.pairs=[["thick", "bright"]]', "pairs.n_same_source=4", "pairs.n_same_destination=4",
    "pairs.alpha_steps=4", "pairs.alpha_growth=2.0", "pairs.sheet_pairs=4",
)


@pytest.fixture(scope="session")
def tiny_digits_run(tmp_path_factory):
    """``cage-eval generate -e digits`` at a tiny size (declared DAG thick->bright, its pairs and
    contact sheets, RUN/report.html), once per session. Copy it before changing it."""
    from click.testing import CliRunner

    from cage.compute.runtime import torch_threads
    from cage_eval.cli import cli

    base = tmp_path_factory.mktemp("tiny-digits")
    args = ["generate", "-e", "digits", "--out", str(base / "run"), "--cache-dir",
            str(base / "cache")]
    for item in TINY_DIGITS:
        args += ["--set", item]
    with torch_threads(1):
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return base / "run"


@pytest.fixture(scope="session")
def answered_digits_run(tiny_digits_run, tmp_path_factory):
    """:func:`tiny_digits_run` copied, with HIT items (attention checks), simulated answers and
    their analysis (``hits``, ``simulate``, ``analyze``), so RUN/report.html shows Table 2."""
    from click.testing import CliRunner

    from cage_eval.cli import cli

    run = tmp_path_factory.mktemp("answered-digits") / "run"
    shutil.copytree(tiny_digits_run, run)
    for args in (["hits", str(run), "--attention-rate", "0.25"],
                 ["simulate", str(run), "--p-cause", "0.8", "--spammers", "0.1"],
                 ["analyze", str(run / "results.csv"), "--n-boot", "50", "-q"]):
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return run


# --------------------------------------------------------------------------- MTurk
@pytest.fixture
def aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Dummy credentials in the environment; no profile, session token or region leaks in."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    env = aws_environment(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A synthetic run: 2 DAGs x 2 settings x 2 pairs = 8 pair items."""
    return make_run_dir(tmp_path / "run", pairs_per_cell=2)


@pytest.fixture
def fake() -> Iterator[FakeMTurk]:
    """A fault-free local MTurk endpoint."""
    with FakeMTurk(max_lifetime_s=120) as server:
        yield server


# --------------------------------------------------------------------------- torch
@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny networks on a busy machine are 50-100x slower with
    several threads (each op waits for every thread), and results do not depend on it."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
