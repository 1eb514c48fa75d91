"""What a worker's answer may be, and what happens to one that is not.

A HIT form posts three fields (``hitgen.render.FORM_FIELDS``): ``choice`` (``top`` or
``bottom``), ``item_id`` (the opaque id the page showed) and ``elapsed_ms`` (a count of
milliseconds). A worker who edits the form can post anything instead, of any length. Such an
assignment is *invalid*: it is left out of ``RUN/results.csv`` (one worker must never stop the
collection or the analysis of everyone else's answers), listed in
``RUN/raw_answers/invalid_answers.csv`` with the reason, and reported; the raw answer stays in
``RUN/raw_answers/``. Messages and that file show at most :data:`SHOWN_CHARS` characters of a
value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cage_eval import files, runs

#: The longest value any answer field may have.
MAX_ANSWER_CHARS = 64
#: How much of an offending value messages show.
SHOWN_CHARS = 40
INVALID_ANSWERS = runs.INVALID_ANSWERS
_ITEM_ID = re.compile(r"h[0-9a-f]{15}")
_ELAPSED = re.compile(r"[0-9]{1,12}")


def shown(value: str, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``value``, with its length when cut."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value):,} characters)"


@dataclass(frozen=True)
class InvalidAnswer:
    """One assignment whose answer cannot be used, and why (``problem`` is already cut)."""

    AssignmentId: str
    WorkerId: str
    HITId: str
    item_id: str
    field: str
    problem: str

    def describe(self) -> str:
        """``assignment A by worker W: choice ...``."""
        return (f"assignment {shown(self.AssignmentId, 64)} by worker {shown(self.WorkerId, 64)}: "
                f"{self.field} {self.problem}")


def answer_problem(answers: Mapping[str, str], item_id: str) -> tuple[str, str] | None:
    """``(field, problem)`` for the first field of ``answers`` that cannot be used, or None.

    ``answers`` maps the form fields (``choice``, ``item_id``, ``elapsed_ms``) to what was
    posted; ``item_id`` is the item the HIT showed.
    """
    for field, value in answers.items():
        if len(value) > MAX_ANSWER_CHARS:
            return field, f"is {len(value):,} characters long (at most {MAX_ANSWER_CHARS})"
    choice = answers.get(runs.ANSWER_FIELD, "")
    if choice not in runs.ANSWER_VALUES:
        what = "missing" if not choice else f"{shown(choice)}, not {' or '.join(runs.ANSWER_VALUES)}"
        return runs.ANSWER_FIELD, f"is {what}"
    echo = answers.get("item_id", "")
    if echo and (not _ITEM_ID.fullmatch(echo) or echo != item_id):
        return "item_id", f"is {shown(echo)}, not the item shown ({item_id})"
    elapsed = answers.get("elapsed_ms", "")
    if elapsed and not _ELAPSED.fullmatch(elapsed):
        return "elapsed_ms", f"is {shown(elapsed)}, not a number of milliseconds"
    return None


def write_invalid_answers(run_dir: Path, invalid: Sequence[InvalidAnswer]) -> Path | None:
    """Write (or, when there are none, remove) ``RUN/raw_answers/invalid_answers.csv``."""
    path = Path(run_dir) / runs.RAW_ANSWERS_DIR / INVALID_ANSWERS
    if not invalid:
        path.unlink(missing_ok=True)
        return None
    files.atomic_write_csv(path, (asdict(i) for i in invalid),
                           [f for f in InvalidAnswer.__dataclass_fields__])
    return path


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def mturk_time(value: Any) -> str:
    """MTurk's batch-results time format, ``Sat Nov 28 16:38:44 UTC 2026`` ('' for None).

    Day and month names are spelled out here so the system locale cannot change them.
    """
    if value is None or value == "":
        return ""
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(float(value), tz=timezone.utc)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    v = value.astimezone(timezone.utc)
    return f"{_DAYS[v.weekday()]} {_MONTHS[v.month - 1]} {v:%d %H:%M:%S} UTC {v.year}"


# --------------------------------------------------------------------------- earlier results

#: What an existing ``results.csv`` holds, as :func:`results_origin` names it.
ORIGIN_WORDS = {"simulated": "simulated answers", "turkle": "answers collected from Turkle",
                "mturk": "answers collected from MTurk",
                "prolific": "answers collected from Prolific",
                "unknown": "answers of unknown origin"}


def results_origin(path: Path) -> tuple[str | None, int]:
    """Where the answers in ``path`` came from, and how many rows it holds: ``simulated`` (every
    worker id ``SIM-``), ``prolific`` (Turkle's layout with Prolific's columns), ``turkle``
    (Turkle's layout), ``mturk`` (MTurk's batch-results layout),
    ``unknown``, or ``None`` when there is no file or it holds no answer."""
    import csv
    import io

    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return None, 0
    except (OSError, UnicodeDecodeError):
        return "unknown", 0
    try:
        reader = csv.DictReader(io.StringIO(text))
        rows = list(reader)
        header = reader.fieldnames or []
    except csv.Error:
        return "unknown", 0
    if not rows:
        return None, 0
    if all(str(r.get("WorkerId") or "").startswith(runs.SIMULATED_WORKER_PREFIX) for r in rows):
        return "simulated", len(rows)
    if "Prolific.PID" in header:
        return "prolific", len(rows)
    if "Turkle.Username" in header:
        return "turkle", len(rows)
    if "AssignmentStatus" in header:
        return "mturk", len(rows)
    return "unknown", len(rows)


@dataclass(frozen=True)
class KeptAside:
    """An earlier ``results.csv`` of another origin, moved beside the new one."""

    path: Path
    origin: str
    rows: int

    def describe(self, new_origin: str) -> str:
        """One line for the user: what was kept, where, and what ``results.csv`` holds now."""
        return (f"the earlier {self.path.parent / runs.RESULTS} ({self.rows} rows of "
                f"{ORIGIN_WORDS.get(self.origin, self.origin)}) is kept as {self.path}; "
                f"{runs.RESULTS} now holds the {ORIGIN_WORDS[new_origin]}")


def keep_other_origin(run_dir: Path, origin: str) -> KeptAside | None:
    """Before a crowd backend writes ``RUN/results.csv`` with answers of ``origin``: move an
    existing file of another origin (simulated answers, another backend's, or one not recognised)
    to ``RUN/results.<its origin>.csv`` (``.2``, ``.3``, ... if taken), never replacing it.
    A file of the same origin (a repeated collect) or without answers is left to be replaced.
    """
    path = Path(run_dir) / runs.RESULTS
    before, rows = results_origin(path)
    if before is None or before == origin:
        return None
    n = 1
    while True:
        target = path.with_name(f"results.{before}{'' if n == 1 else f'.{n}'}.csv")
        if not target.exists():
            break
        n += 1
    os.replace(path, target)  # a rename: the answers are never without a name
    return KeptAside(target, before, rows)
