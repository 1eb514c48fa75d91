"""Shared pieces of the MTurk tests: dummy credentials, a synthetic run, a local endpoint.

The dummy key and secret are distinctive so a test can grep the run directory for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from crowd_fixtures import make_run_dir
from fake_mturk import FakeMTurk

DUMMY_ACCESS_KEY = "AKIACAGEEVALDUMMY0001"
DUMMY_SECRET_KEY = "cageEvalDummySecretThatMustNeverBeWritten0"
PUBLISH_OPTIONS = ["--reward", "0.05", "--assignments", "3", "--lifetime", "3d",
                   "--duration", "10m", "--auto-approve", "3d"]


def aws_environment(tmp_path: Path) -> dict[str, str]:
    """Environment variables that give boto3 the dummy credentials and nothing else."""
    return {
        "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_KEY,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


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


def tree_bytes(root: Path) -> bytes:
    """Every file under ``root`` concatenated (to grep for secrets)."""
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def snapshot(root: Path) -> dict[str, bytes]:
    """``{relative path: bytes}`` of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def environ_with(env: dict[str, str]) -> dict[str, str]:
    """``os.environ`` plus ``env`` (for subprocesses)."""
    out = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"):
        out.pop(name, None)
    out.update(env)
    return out
