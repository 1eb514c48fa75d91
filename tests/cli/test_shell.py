"""The command-line shell: help texts, README coverage, error conversion, light imports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cage_eval.cli import CageGroup, cli
from cage_eval.errors import ConfigError

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


ALL = list(_commands(cli))


def test_the_expected_commands_exist():
    names = {" ".join(path) for path, _ in ALL}
    assert {"generate", "train", "hits", "export-batch", "publish", "status", "collect", "review",
            "expire", "analyze", "power", "turkle", "turkle serve", "turkle publish",
            "turkle collect"} <= names


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_and_is_in_the_readme(path, command):
    assert command.help and len(command.help.split()) >= 5, f"{path}: help text too short"
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.output
    name = path[-1]
    mentioned = (f"cage-eval {' '.join(path)}" in README or f"`{name}`" in README
                 or f"`{' '.join(path)}" in README)
    assert mentioned, f"README.md does not mention the command {' '.join(path)!r}"


def test_usage_errors_are_one_error_line_and_exit_code_1():
    res = CliRunner().invoke(cli, ["no-such-command"])
    assert res.exit_code == 1
    assert "Error: No such command 'no-such-command'" in res.output
    res = CliRunner().invoke(cli, ["generate", "--seed", "many"])
    assert res.exit_code == 1
    assert "Error: Invalid value for '--seed'" in res.output


def test_library_errors_become_error_lines():
    @click.group(cls=CageGroup)
    def group():
        """A test group."""

    @group.command()
    def boom():
        """Raise a user-facing error."""
        raise ConfigError("experiment.toml: [cage] alpha = -1: must be positive; use alpha > 0")

    res = CliRunner().invoke(group, ["boom"])
    assert res.exit_code == 1
    assert res.output == ("Error: experiment.toml: [cage] alpha = -1: must be positive; "
                          "use alpha > 0\n")


def test_programmer_errors_are_not_swallowed():
    @click.group(cls=CageGroup)
    def group():
        """A test group."""

    @group.command()
    def bug():
        """Raise a programmer error."""
        raise ZeroDivisionError("bug")

    res = CliRunner().invoke(group, ["bug"])
    assert isinstance(res.exception, ZeroDivisionError)


def test_help_and_version_load_nothing_heavy():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from cage_eval.cli import cli\n"
        "for args in (['--help'], ['--version'], ['analyze', '--help'], ['publish', '--help']):\n"
        "    r = CliRunner().invoke(cli, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = sorted(m for m in ('torch', 'pandas', 'boto3', 'matplotlib', 'sklearn')\n"
        "               if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_version():
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert re.match(r"cage-eval, version \d+\.\d+\.\d+", res.output)
