"""``cage-eval`` commands: analyze."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
