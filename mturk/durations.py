"""Durations given on the command line (``3d``, ``10m``, ``90s``, ``2h``, ``1w`` or plain seconds),
checked against MTurk's ranges (docs/platforms.md §2.2)."""

from __future__ import annotations

import re

from cage_eval.errors import ConfigError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhdw]?)\s*$")

#: HIT lifetime and assignment duration: 30 seconds to 365 days.
MIN_DURATION_S = 30
MAX_DURATION_S = 365 * 86400
#: Auto-approval delay: 0 to 30 days.
MAX_AUTO_APPROVAL_S = 30 * 86400


def parse_duration(text: str, *, option: str, minimum: int = MIN_DURATION_S,
                   maximum: int = MAX_DURATION_S) -> int:
    """Seconds in ``text``; raise :class:`ConfigError` naming ``option`` when malformed or out of range."""
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{option} {text!r}: not a duration; write a number with a unit, e.g. 90s, 10m, 2h, 3d, 1w"
        )
    seconds = int(match.group(1)) * UNITS[match.group(2) or "s"]
    if not minimum <= seconds <= maximum:
        raise ConfigError(
            f"{option} {text!r} = {seconds} s: outside MTurk's range "
            f"{format_duration(minimum)} .. {format_duration(maximum)}"
        )
    return seconds


def format_duration(seconds: int) -> str:
    """Largest whole unit: ``259200 -> '3d'``, ``600 -> '10m'``, ``45 -> '45s'``."""
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"
