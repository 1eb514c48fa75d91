"""Shared pieces of the MTurk tests: dummy credentials, a synthetic run, a local endpoint.

The dummy key and secret are distinctive so a test can grep the run directory for them.
"""

from __future__ import annotations

import os
from pathlib import Path

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
