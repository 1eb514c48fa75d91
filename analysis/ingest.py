"""Read annotation files in any supported layout into one long table of raw judgements.

Four layouts are recognised (``detect_format``):

``mturk``
    ``RUN/results.csv`` written by ``cage-eval collect`` (``cage_eval.runs.RESULTS_COLUMNS``, the
    requester website's batch-results layout, ``RequesterAnnotation`` = ``cage-eval:<run_id>``).
``batch``
    The MTurk requester website's ``Batch_NNNNNNN_batch_results.csv`` (same 27 metadata columns,
    then ``Input.*``, ``Answer.*``, ``Approve``, ``Reject``; ``RequesterAnnotation`` is
    ``BatchId:NNNN;``). Answers from a ``crowd-form`` template (``Answer.taskAnswers`` JSON) are
    accepted too.
``turkle``
    Turkle's results CSV: a subset of the MTurk columns plus ``Turkle.Username``; integer
    ``HITId``/``WorkerId``; multi-valued answers written as a Python list repr (``['top']``); no
    ``AssignmentStatus``, ``Approve`` or ``Reject`` (Turkle has no rejections).
``tidy``
    Backend-neutral: one row per judgement with ``dag, setting, pair_id, worker_id, preferred``
    (``preferred`` is ``cause`` or ``effect``); optional ``assignment_id``, ``cause_position``
    (``top``/``bottom``, where the cause image was shown), ``work_time_s``, ``study_id`` and
    ``ip_hash`` (for the duplicate-participant rule, :mod:`analysis.quality`).

Every reader returns a :class:`pandas.DataFrame` with the columns :data:`RAW_COLUMNS`, all
strings except ``line`` (the 1-based line of the row in the file, header = line 1) and
``work_time_s`` (float seconds, NaN when unknown). Columns a layout lacks are empty strings.
A file with a header and no rows (nobody has answered yet) gives an empty frame.
Errors are :class:`~cage_eval.errors.InputFileError` naming the file, line, column and what to do.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cage_eval import runs
from cage_eval.errors import InputFileError
from cage_eval.textfiles import CsvTable, decode_text, read_csv_table

FORMATS = ("mturk", "batch", "turkle", "tidy")
#: ``DataFrame.attrs`` key of :func:`read_annotations`' note about rows set aside (more fields
#: than the header; :attr:`cage_eval.textfiles.CsvTable.extra_note`).
SET_ASIDE_NOTE = "set_aside"
TIDY_COLUMNS = ("dag", "setting", "pair_id", "worker_id", "preferred")
TIDY_OPTIONAL = ("assignment_id", "cause_position", "work_time_s", "study_id", "ip_hash")
#: The columns every MTurk-style layout must have (docs/platforms.md §2.12: "key the
#: analyzer on Input.*, Answer.*, WorkerId, AssignmentId, HITId, and treat the rest as optional").
MTURK_REQUIRED = ("HITId", "AssignmentId", "WorkerId", "Input.item_id")
MTURK_OPTIONAL = (
    "AssignmentStatus", "Approve", "Reject", "WorkTimeInSeconds", "SubmitTime",
    "RequesterAnnotation", "Input.run_id", "Answer.item_id", "Turkle.Username", "MaxAssignments",
    "AcceptTime", "Crowd.StudyId", "Crowd.IpHash",
)

RAW_COLUMNS = (
    "line",            # int: line in the file (header is line 1)
    "source",          # one of FORMATS
    "hit_id",
    "assignment_id",
    "worker_id",
    "worker_name",     # Turkle.Username; else the worker id
    "status",          # AssignmentStatus ('' when the layout has none)
    "marked_reject",   # the Reject column's text ('' when absent)
    "submit_time",     # as written in the file
    "work_time_s",     # float seconds
    "run_id",          # Input.run_id or from RequesterAnnotation ('' when absent)
    "item_id",         # Input.item_id ('' for tidy)
    "answer_item_id",  # Answer.item_id echoed by the form ('' when absent)
    "choice",          # 'top' / 'bottom' ('' for tidy)
    "dag",             # tidy only ('' otherwise; filled by the join)
    "setting",
    "pair_id",
    "preferred",       # tidy only
    "cause_position",  # tidy only
    "max_assignments",  # MaxAssignments: assignments the HIT asked for ('' when absent)
    "accept_time",     # AcceptTime as written ('' when absent)
    "study_id",        # Crowd.StudyId / study_id: the crowd's study ('' when absent)
    "ip_hash",         # Crowd.IpHash / ip_hash: salted hash of the IP address ('' when absent)
)


@dataclass(frozen=True)
class CsvHeader:
    """The header of a CSV file and how to read the rest."""

    path: Path
    columns: tuple[str, ...]
    encoding: str
    table: CsvTable


def read_header(path: str | Path) -> CsvHeader:
    """Read and check the header line of ``path``; raise InputFileError for non-CSV input."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file; give the results CSV to analyse")
    if not path.is_file():
        raise InputFileError(f"{path}: is not a file; give the results CSV to analyse")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot be read ({exc.strerror})") from None
    head = data[:65536]
    if not head.strip():
        raise InputFileError(f"{path}: the file is empty; download the results again")
    if b"\x00" in head:
        raise InputFileError(f"{path}: not a CSV file (binary content at the start); "
                             "give the results CSV, not a spreadsheet or archive")
    text = decode_text(path, data, fix="save it as UTF-8 CSV")
    if text.text.lstrip().startswith(("{", "[", "<")):
        raise InputFileError(f"{path}: line 1: not a CSV file (it looks like JSON/HTML/XML); "
                             "give the results CSV")
    table = read_csv_table(path, text=text)
    columns = table.columns
    if len(columns) < 2:
        raise InputFileError(
            f"{path}: line 1: not a CSV results file (header has {len(columns)} column); "
            "expected the results layout or the tidy columns " + ", ".join(TIDY_COLUMNS))
    dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
    if dupes:
        raise InputFileError(f"{path}: line 1: column(s) {', '.join(dupes)} appear twice; "
                             "remove the duplicate columns")
    return CsvHeader(path=path, columns=columns, encoding=text.encoding, table=table)


def detect_format(header: CsvHeader) -> str:
    """The layout of a file from its header: ``mturk``, ``batch``, ``turkle`` or ``tidy``.

    ``mturk`` and ``batch`` share a layout; a file is ``mturk`` when its first data row's
    ``RequesterAnnotation`` starts with ``cage-eval:`` (written by ``cage-eval collect``).
    """
    cols = set(header.columns)
    if "Turkle.Username" in cols:
        return "turkle"
    if "HITId" in cols or "AssignmentId" in cols or any(c.startswith("Input.") for c in cols):
        if "RequesterAnnotation" in cols:
            first = _read_columns(header, ["RequesterAnnotation"], nrows=1)
            if len(first) and first["RequesterAnnotation"].iloc[0].startswith(
                    runs.REQUESTER_ANNOTATION_PREFIX):
                return "mturk"
        return "batch"
    if set(TIDY_COLUMNS) & cols:
        return "tidy"
    raise InputFileError(
        f"{header.path}: line 1: unrecognised header ({', '.join(header.columns[:6])}"
        f"{', ...' if len(header.columns) > 6 else ''}); expected a results CSV (HITId, "
        f"AssignmentId, WorkerId, Input.item_id, Answer.choice, ...) or the tidy columns "
        f"{', '.join(TIDY_COLUMNS)}")


def _read_columns(header: CsvHeader, usecols: list[str], nrows: int | None = None) -> pd.DataFrame:
    """The ``usecols`` columns of the file's rows (all, or the first ``nrows``) as strings."""
    table = header.table
    missing = [c for c in usecols if c not in table.columns]
    if missing:
        raise InputFileError(f"{header.path}: line 1: missing column(s) {', '.join(missing)}")
    rows = table.rows if nrows is None else table.rows[:nrows]
    data = {c: [row[table.columns.index(c)] for row in rows] for c in usecols}
    return pd.DataFrame(data, columns=list(usecols), dtype=object)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _require(header: CsvHeader, required: tuple[str, ...], fmt: str) -> None:
    missing = [c for c in required if c not in header.columns]
    if missing:
        raise InputFileError(
            f"{header.path}: line 1: missing column(s) {', '.join(missing)} required for the "
            f"{fmt} layout; give the unmodified results file, or --format to choose another layout")


def _lines(header: CsvHeader, n: int) -> np.ndarray:
    """The line each of the first ``n`` rows starts on (the header is line 1)."""
    return np.asarray(header.table.lines[:n], dtype=np.int64)


#: A list repr longer than this is not an answer (and is never parsed).
_MAX_LIST_REPR = 1000


def _cut(value: str, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters of a value, for error lines."""
    return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value):,} characters)"


def _literal_list(raw: str) -> object:
    """``ast.literal_eval`` of a short value; None for anything unreadable (a deeply nested or
    huge expression such as ``[1+1+...]`` would otherwise exhaust the parser)."""
    if len(raw) > _MAX_LIST_REPR:
        return None
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _unwrap_list_repr(values: pd.Series, path: Path, column: str, lines: list[int]) -> pd.Series:
    """Turkle writes repeated form fields as a Python list repr: ``['top']`` -> ``top``."""
    mask = values.str.startswith("[")
    if not mask.any():
        return values
    out = values.copy()
    # Fast path for the common single value, ['top']; anything else goes through literal_eval.
    single = values.str.extract(r"^\[\s*'([A-Za-z_]*)'\s*\]$", expand=False)
    simple = mask & single.notna()
    out[simple] = single[simple]
    for idx in np.flatnonzero((mask & ~simple).to_numpy()):
        raw = values.iloc[idx]
        parsed = _literal_list(raw)
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise InputFileError(f"{path}: line {lines[idx]}: column {column}: unreadable value "
                                 f"{_cut(raw)}; expected top or bottom")
        distinct = sorted(set(parsed))
        if len(distinct) != 1:
            raise InputFileError(
                f"{path}: line {lines[idx]}: column {column}: several answers {_cut(raw)} in one "
                "assignment; fix or remove the row")
        out.iloc[idx] = distinct[0]
    return out


def _task_answers_choice(values: pd.Series, path: Path, lines: list[int]) -> pd.Series:
    """``Answer.taskAnswers`` (crowd-form JSON) -> the chosen ``top``/``bottom``."""
    out = []
    for i, raw in enumerate(values.tolist()):
        choice = ""
        try:
            data = json.loads(raw) if raw else []
        except (json.JSONDecodeError, RecursionError):
            raise InputFileError(f"{path}: line {lines[i]}: column Answer.taskAnswers: not JSON "
                                 f"({_cut(raw)}); give the unmodified batch results") from None
        entry = data[0] if isinstance(data, list) and data else data
        value = entry.get(runs.ANSWER_FIELD) if isinstance(entry, dict) else None
        if isinstance(value, str):
            choice = value
        elif isinstance(value, dict):  # crowd-radio-group: {"top": true, "bottom": false}
            picked = [k for k, v in value.items() if v is True]
            choice = picked[0] if len(picked) == 1 else "|".join(picked)
        out.append(choice)
    return pd.Series(out, index=values.index, dtype=object)



def _read_rows(header: CsvHeader, wanted: list[str]
               ) -> tuple[pd.DataFrame, Callable[[str], pd.Series], pd.Series]:
    """Read the ``wanted`` columns. Returns the frame, a getter for a stripped column (an
    all-empty column when absent) and that empty column."""
    df = _read_columns(header, wanted)
    empty = pd.Series("", index=df.index, dtype=object)

    def col(name: str) -> pd.Series:
        return df[name].str.strip() if name in df.columns else empty

    return df, col, empty


def has_data_rows(header: CsvHeader) -> bool:
    """Whether the file has at least one row after its header."""
    return len(_read_columns(header, [header.columns[0]], nrows=1)) > 0


def empty_raw(fmt: str) -> pd.DataFrame:
    """A :data:`RAW_COLUMNS` frame with no rows: a file nobody has answered yet."""
    out = pd.DataFrame({c: pd.Series(dtype=object) for c in RAW_COLUMNS})
    out["line"] = out["line"].astype(np.int64)
    out["work_time_s"] = out["work_time_s"].astype(float)
    out["source"] = fmt
    return out


def read_mturk_layout(header: CsvHeader, fmt: str) -> pd.DataFrame:
    """Read an ``mturk``/``batch``/``turkle`` file into :data:`RAW_COLUMNS`.

    A file with a header and no rows gives an empty frame whatever its columns: Turkle serves an
    unanswered batch's results without any ``Input.*``/``Answer.*`` column, and ``cage-eval
    collect`` writes the header alone while no worker has submitted.
    """
    if not has_data_rows(header):
        return empty_raw(fmt)
    answer_col = f"Answer.{runs.ANSWER_FIELD}"
    has_answer = answer_col in header.columns
    has_task_answers = "Answer.taskAnswers" in header.columns
    _require(header, MTURK_REQUIRED, fmt)
    if not has_answer and not has_task_answers:
        raise InputFileError(
            f"{header.path}: line 1: missing column {answer_col} (the worker's answer); give "
            "the results of a HIT made by cage-eval, whose form field is 'choice'")
    wanted = list(MTURK_REQUIRED) + [c for c in MTURK_OPTIONAL if c in header.columns]
    wanted.append(answer_col if has_answer else "Answer.taskAnswers")
    df, col, empty = _read_rows(header, wanted)
    n = len(df)

    if has_answer:
        choice = _unwrap_list_repr(col(answer_col), header.path, answer_col, header.table.lines)
    else:
        choice = _task_answers_choice(df["Answer.taskAnswers"], header.path, header.table.lines)
    run_id = col("Input.run_id")
    annotation = col("RequesterAnnotation")
    if "Input.run_id" not in df.columns and "RequesterAnnotation" in df.columns:
        prefix = runs.REQUESTER_ANNOTATION_PREFIX
        # cage-eval:<run_id>, optionally followed by ;<marker> (cage-eval simulate adds ;simulated)
        run_id = (annotation.where(annotation.str.startswith(prefix), "").str.slice(len(prefix))
                  .str.split(";", n=1).str[0])
    worker = col("WorkerId")
    name = col("Turkle.Username") if "Turkle.Username" in df.columns else worker
    work_time = pd.to_numeric(col("WorkTimeInSeconds"), errors="coerce") if (
        "WorkTimeInSeconds" in df.columns) else pd.Series(np.nan, index=df.index)
    out = pd.DataFrame({
        "line": _lines(header, n),
        "source": fmt,
        "hit_id": col("HITId"),
        "assignment_id": col("AssignmentId"),
        "worker_id": worker,
        "worker_name": name,
        "status": col("AssignmentStatus"),
        "marked_reject": col("Reject"),
        "submit_time": col("SubmitTime"),
        "work_time_s": work_time.astype(float),
        "run_id": run_id,
        "item_id": col("Input.item_id"),
        "answer_item_id": _unwrap_list_repr(col("Answer.item_id"), header.path, "Answer.item_id",
                                            header.table.lines),
        "choice": choice,
        "dag": empty, "setting": empty, "pair_id": empty, "preferred": empty,
        "cause_position": empty, "max_assignments": col("MaxAssignments"),
        "accept_time": col("AcceptTime"),
        "study_id": col("Crowd.StudyId"),
        "ip_hash": col("Crowd.IpHash"),
    }, columns=list(RAW_COLUMNS))
    # Where the run id came from, for error messages.
    out.attrs["run_id_column"] = (
        "Input.run_id" if "Input.run_id" in df.columns else "RequesterAnnotation")
    return out


def read_tidy(header: CsvHeader) -> pd.DataFrame:
    """Read a tidy file (``dag, setting, pair_id, worker_id, preferred`` + optional columns);
    an empty frame when the file has a header and no rows."""
    _require(header, TIDY_COLUMNS, "tidy")
    if not has_data_rows(header):
        return empty_raw("tidy")
    wanted = list(TIDY_COLUMNS) + [c for c in TIDY_OPTIONAL if c in header.columns]
    df, col, empty = _read_rows(header, wanted)
    n = len(df)

    for name in TIDY_COLUMNS:
        blank = (col(name) == "").to_numpy()
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise InputFileError(f"{header.path}: line {header.table.lines[i]}: column {name} is empty; "
                                 "every judgement needs dag, setting, pair_id, worker_id, preferred")
    if "work_time_s" in df.columns:
        raw = col("work_time_s")
        work_time = pd.to_numeric(raw, errors="coerce")
        bad = (work_time.isna() & (raw != "")).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputFileError(f"{header.path}: line {header.table.lines[i]}: column work_time_s: "
                                 f"{raw.iloc[i]!r} is not a number of seconds")
    else:
        work_time = pd.Series(np.nan, index=df.index)
    assignment = col("assignment_id")
    return pd.DataFrame({
        "line": _lines(header, n),
        "source": "tidy",
        "hit_id": empty,
        "assignment_id": assignment,
        "worker_id": col("worker_id"),
        "worker_name": col("worker_id"),
        "status": empty,
        "marked_reject": empty,
        "submit_time": empty,
        "work_time_s": work_time.astype(float),
        "run_id": empty,
        "item_id": empty,
        "answer_item_id": empty,
        "choice": empty,
        "dag": col("dag"),
        "setting": col("setting"),
        "pair_id": col("pair_id"),
        "preferred": col("preferred"),
        "cause_position": col("cause_position"),
        "max_assignments": empty,
        "accept_time": empty,
        "study_id": col("study_id"),
        "ip_hash": col("ip_hash"),
    }, columns=list(RAW_COLUMNS))


def read_annotations(path: str | Path, fmt: str = "auto") -> tuple[pd.DataFrame, str]:
    """Read an annotation file of layout ``fmt`` (or detected when ``"auto"``).

    Returns
    -------
    (DataFrame with :data:`RAW_COLUMNS`, the layout name)
    """
    header = read_header(path)
    if fmt == "auto":
        fmt = detect_format(header)
    elif fmt not in FORMATS:
        raise InputFileError(f"--format {fmt!r}: must be auto or one of {', '.join(FORMATS)}")
    raw = read_tidy(header) if fmt == "tidy" else read_mturk_layout(header, fmt)
    if header.table.extra_lines:
        raw.attrs[SET_ASIDE_NOTE] = header.table.extra_note
    return raw, fmt
