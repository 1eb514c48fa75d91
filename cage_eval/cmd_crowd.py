"""``cage-eval`` commands: crowd."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
