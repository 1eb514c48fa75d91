"""Join raw judgements with the run's blinding map to learn which image each worker preferred.

A worker answers ``top`` or ``bottom``; ``RUN/hit_items.csv`` (``cage_eval.runs.HIT_ITEMS_COLUMNS``)
says which role was shown where. ``preferred = role_top if choice == 'top' else role_bottom``.
The join key is ``Input.item_id`` only; image names and URLs in the results file are ignored.

Tidy files already carry ``preferred``; with a run directory their pair ids are checked against
``RUN/pairs.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cage_eval import runs
from cage_eval.errors import InputFileError, RunDirError

#: The normalised judgement table every later step works on.
JUDGEMENT_COLUMNS = (
    "line", "source", "hit_id", "assignment_id", "worker_id", "worker_name", "status",
    "marked_reject", "submit_time", "work_time_s", "item_id", "kind", "pair_id", "dag", "setting",
    "choice", "cause_position", "preferred", "correct", "accept_time", "study_id", "ip_hash",
)


@dataclass
class JoinReport:
    """What the join found: the run used and the rows set aside."""

    run_dir: Path | None = None
    run_id: str = ""
    unknown_items: list[tuple[int, str]] = field(default_factory=list)   # (line, item/pair id)
    item_echo_mismatch: list[tuple[int, str]] = field(default_factory=list)
    #: Pairs per (dag, setting) in the run (its HIT items, or pairs.csv for tidy files), when
    #: the run is known.
    pairs_in_run: dict[tuple[str, str], int] = field(default_factory=dict)


# --------------------------------------------------------------------------- run directories


def _manifest_run_id(run_dir: Path) -> str | None:
    try:
        data = json.loads((run_dir / runs.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = data.get("run_id") if isinstance(data, dict) else None
    return str(value) if value is not None else None


def _candidate_dirs(results_path: Path) -> list[Path]:
    here = results_path.resolve().parent
    seen: list[Path] = []
    bases = [here, here.parent, Path.cwd(), Path.cwd() / "runs"]
    for base in bases:
        for cand in [base, *sorted(p for p in base.iterdir() if p.is_dir())] if base.is_dir() else []:
            if (cand / runs.MANIFEST).is_file() and cand not in seen:
                seen.append(cand)
    return seen


def find_run_dir(results_path: str | Path, run_id: str, item_id: str) -> Path:
    """Find the run directory a results file belongs to.

    Looked for, in order: the directory holding the file (``RUN/results.csv``); run directories
    next to it, above it, in the working directory and in ``./runs``, matched by ``run_id`` (from
    ``Input.run_id`` or ``RequesterAnnotation``), else by a ``hit_items.csv`` containing the
    file's first ``item_id``.
    """
    results_path = Path(results_path)
    here = results_path.resolve().parent
    if (here / runs.MANIFEST).is_file() and (not run_id or _manifest_run_id(here) == run_id):
        return here
    candidates = _candidate_dirs(results_path)
    if run_id:
        for cand in candidates:
            if _manifest_run_id(cand) == run_id:
                return cand
    elif item_id:
        needle = item_id.encode()
        for cand in candidates:
            items = cand / runs.HIT_ITEMS
            if items.is_file() and needle in items.read_bytes():
                return cand
    which = f"run {run_id}" if run_id else "the run these answers belong to"
    raise RunDirError(f"{results_path}: cannot find the run directory of {which}; "
                      "pass --run DIR (the directory made by `cage-eval generate`)")


def read_hit_items_table(run_dir: Path) -> pd.DataFrame:
    """``RUN/hit_items.csv`` as strings, checked for its columns and unique item ids."""
    path = runs.require_file(run_dir, runs.HIT_ITEMS, made_by=f"cage-eval publish {run_dir}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({type(exc).__name__}); "
                          "re-run `cage-eval hits` for this run") from None
    missing = [c for c in runs.HIT_ITEMS_COLUMNS if c not in df.columns]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}; "
                          "it was not written by this version of cage-eval")
    dup = df["item_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise RunDirError(f"{path}: line {i + 2}: item_id {df['item_id'].iloc[i]!r} appears twice")
    return df


def _cell_sizes(pairs: pd.DataFrame) -> dict[tuple[str, str], int]:
    sizes = pairs.groupby(["dag", "setting"], sort=True).size()
    return {(str(d), str(s)): int(n) for (d, s), n in sizes.items()}


def items_design(items: pd.DataFrame) -> tuple[dict[tuple[str, str], int], int]:
    """``(pair items per (dag, setting), attention items)`` of a ``hit_items.csv`` table."""
    is_pair = items["kind"] == "pair"
    return _cell_sizes(items[is_pair]), int((~is_pair).sum())


def read_pairs_table(run_dir: Path) -> pd.DataFrame:
    """``RUN/pairs.csv`` (pair_id, dag, setting) as strings."""
    path = runs.require_file(run_dir, runs.PAIRS, made_by=f"cage-eval generate --out {run_dir}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                         usecols=["pair_id", "dag", "setting"])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable or missing pair_id/dag/setting "
                          f"({type(exc).__name__}); regenerate the run") from None
    return df


# --------------------------------------------------------------------------- checks


def _fail_first(mask: np.ndarray, raw: pd.DataFrame, path: Path, message: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        raise InputFileError(message.format(path=path, line=int(raw["line"].iloc[i]), i=i))


def _check_values(values: pd.Series, allowed: tuple[str, ...], raw: pd.DataFrame, path: Path,
                  column: str, hint: str) -> None:
    bad = ~values.isin(allowed).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = values.iloc[i]
        shown = "an empty value" if value == "" else (
            repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value):,} characters)")
        raise InputFileError(f"{path}: line {int(raw['line'].iloc[i])}: column {column}: "
                             f"{shown} is not one of {', '.join(allowed)}; {hint}")


def check_single_run(raw: pd.DataFrame, path: Path) -> str:
    """The one run id a file names ('' when none); InputFileError when it names several."""
    ids = raw["run_id"]
    column = raw.attrs.get("run_id_column", "Input.run_id")
    nonempty = ids[ids != ""]
    if nonempty.empty:
        return ""
    first = nonempty.iloc[0]
    other = ((ids != "") & (ids != first)).to_numpy()
    if other.any():
        i = int(np.flatnonzero(other)[0])
        raise InputFileError(
            f"{path}: line {int(raw['line'].iloc[i])}: column {column}: answers of run "
            f"{ids.iloc[i]!r} mixed with run {first!r}; analyse one run per file "
            f"(split the file by {column})")
    return first


# --------------------------------------------------------------------------- join


def _set_aside_unknown(raw: pd.DataFrame, pos: np.ndarray, key: str, column: str, what: str,
                       path: Path, report: JoinReport, run_dir: Path | None,
                       drop_unknown: bool) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows whose ``key`` is not in the run (``pos < 0``): an error naming the first one, or,
    with ``drop_unknown``, set aside in ``report.unknown_items`` and removed."""
    unknown = pos < 0
    if not unknown.any():
        return raw, pos
    if not drop_unknown:
        i = int(np.flatnonzero(unknown)[0])
        raise InputFileError(
            f"{path}: line {int(raw['line'].iloc[i])}: column {column}: "
            f"{raw[key].iloc[i]!r} is not {what} of run {report.run_id or run_dir} "
            f"({int(unknown.sum())} such row(s)); pass the right --run DIR, remove those "
            "rows, or --drop-unknown to set them aside")
    report.unknown_items = list(zip(raw["line"].to_numpy()[unknown].tolist(),
                                    raw[key].to_numpy()[unknown].tolist(), strict=True))
    return raw[~unknown], pos[~unknown]


def join_judgements(
    raw: pd.DataFrame, fmt: str, path: str | Path, run_dir: str | Path | None = None,
    *, drop_unknown: bool = False,
) -> tuple[pd.DataFrame, JoinReport]:
    """Validate raw rows and attach kind, pair, DAG, setting, the preferred role and correctness.

    Parameters
    ----------
    raw : DataFrame with ``analysis.ingest.RAW_COLUMNS``.
    fmt : its layout (``mturk``, ``batch``, ``turkle``, ``tidy``).
    path : the file it came from (for messages and run discovery).
    run_dir : the run directory; found automatically for MTurk/Turkle layouts when omitted.
    drop_unknown : set aside (and report) rows whose item/pair id is not in the run instead of
        failing.

    Returns
    -------
    (DataFrame with :data:`JUDGEMENT_COLUMNS`, :class:`JoinReport`)
    """
    path = Path(path)
    report = JoinReport()
    if fmt == "tidy":
        return _join_tidy(raw, path, None if run_dir is None else Path(run_dir), report,
                          drop_unknown)
    _check_values(raw["choice"], runs.ANSWER_VALUES, raw, path, f"Answer.{runs.ANSWER_FIELD}",
                  "fix the answer or remove the row (unanswered assignments cannot be counted)")
    blank = (raw["item_id"] == "").to_numpy()
    _fail_first(blank, raw, path, "{path}: line {line}: column Input.item_id is empty; "
                "give the unmodified results of HITs made by cage-eval")
    run_id = check_single_run(raw, path)
    if run_dir is None:
        run_dir = find_run_dir(path, run_id, str(raw["item_id"].iloc[0]))
    run_dir = Path(run_dir)
    manifest = runs.read_manifest(run_dir)
    manifest_id = str(manifest.get("run_id", ""))
    if run_id and manifest_id and run_id != manifest_id:
        line = int(raw["line"].iloc[int(np.flatnonzero((raw["run_id"] != "").to_numpy())[0])])
        column = raw.attrs.get("run_id_column", "Input.run_id")
        raise InputFileError(f"{path}: line {line}: column {column}: answers of run "
                             f"{run_id!r}, but {run_dir} is run {manifest_id!r}; pass the "
                             "right --run DIR")
    report.run_dir, report.run_id = run_dir, manifest_id or run_id
    items = read_hit_items_table(run_dir)
    report.pairs_in_run = items_design(items)[0]
    pos = pd.Index(items["item_id"]).get_indexer(raw["item_id"])
    raw, pos = _set_aside_unknown(raw, pos, "item_id", "Input.item_id", "an item", path, report,
                                  run_dir, drop_unknown)
    echo = raw["answer_item_id"].to_numpy()
    mismatch = (echo != "") & (echo != raw["item_id"].to_numpy())
    if mismatch.any():
        report.item_echo_mismatch = list(zip(raw["line"].to_numpy()[mismatch].tolist(),
                                             echo[mismatch].tolist(), strict=True))
        raw, pos = raw[~mismatch], pos[~mismatch]
    it = {c: items[c].to_numpy()[pos] for c in runs.HIT_ITEMS_COLUMNS}
    choice = raw["choice"].to_numpy()
    top = choice == "top"
    chosen_role = np.where(top, it["role_top"], it["role_bottom"])
    kind = it["kind"]
    is_pair = kind == "pair"
    cause_pos = np.where(it["role_top"] == "cause", "top",
                         np.where(it["role_bottom"] == "cause", "bottom", ""))
    correct = np.where(is_pair, np.nan, (choice == it["expected"]).astype(float))
    out = pd.DataFrame({
        "line": raw["line"].to_numpy(),
        "source": fmt,
        "hit_id": raw["hit_id"].to_numpy(),
        "assignment_id": raw["assignment_id"].to_numpy(),
        "worker_id": raw["worker_id"].to_numpy(),
        "worker_name": raw["worker_name"].to_numpy(),
        "status": raw["status"].to_numpy(),
        "marked_reject": raw["marked_reject"].to_numpy(),
        "submit_time": raw["submit_time"].to_numpy(),
        "work_time_s": raw["work_time_s"].to_numpy(),
        "item_id": raw["item_id"].to_numpy(),
        "kind": kind,
        "pair_id": it["pair_id"],
        "dag": it["dag"],
        "setting": it["setting"],
        "choice": choice,
        "cause_position": np.where(is_pair, cause_pos, ""),
        "preferred": np.where(is_pair, chosen_role, ""),
        "correct": correct,
        "accept_time": raw["accept_time"].to_numpy(),
        "study_id": raw["study_id"].to_numpy(),
        "ip_hash": raw["ip_hash"].to_numpy(),
    }, columns=list(JUDGEMENT_COLUMNS))
    bad_role = is_pair & ~np.isin(chosen_role, runs.ROLES)
    if bad_role.any():
        i = int(np.flatnonzero(bad_role)[0])
        raise RunDirError(f"{run_dir / runs.HIT_ITEMS}: item {it['item_id'][i]!r} has roles "
                          f"{it['role_top'][i]!r}/{it['role_bottom'][i]!r}, expected cause/effect; "
                          "re-run `cage-eval hits` for this run")
    return out.reset_index(drop=True), report


def _join_tidy(raw: pd.DataFrame, path: Path, run_dir: Path | None, report: JoinReport,
               drop_unknown: bool) -> tuple[pd.DataFrame, JoinReport]:
    _check_values(raw["setting"], runs.SETTINGS, raw, path, "setting", "fix the value")
    _check_values(raw["preferred"], runs.ROLES, raw, path, "preferred",
                  "write cause or effect (the role of the image the worker preferred)")
    _check_values(raw["cause_position"], ("", *runs.ANSWER_VALUES), raw, path, "cause_position",
                  "write top or bottom (where the cause image was shown), or leave it empty")
    bad_dag = ~raw["dag"].str.contains("->", regex=False).to_numpy()
    _fail_first(bad_dag, raw, path, "{path}: line {line}: column dag: expected "
                "'<cause>-><effect>' (e.g. thick->bright); fix the value")
    # One pair, one cell: the same pair_id under two DAGs or settings is a data error.
    cells = raw[["pair_id", "dag", "setting"]]
    first_cell = cells.drop_duplicates("pair_id").set_index("pair_id")
    ref = first_cell.reindex(raw["pair_id"])
    clash = ((ref["dag"].to_numpy() != raw["dag"].to_numpy())
             | (ref["setting"].to_numpy() != raw["setting"].to_numpy()))
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        pid = raw["pair_id"].iloc[i]
        raise InputFileError(
            f"{path}: line {int(raw['line'].iloc[i])}: column pair_id: pair {pid!r} appears "
            f"under {raw['dag'].iloc[i]}/{raw['setting'].iloc[i]} and under "
            f"{ref['dag'].iloc[i]}/{ref['setting'].iloc[i]}; a pair belongs to one DAG and setting")
    if run_dir is not None:
        manifest = runs.read_manifest(run_dir)
        report.run_dir, report.run_id = run_dir, str(manifest.get("run_id", ""))
        pairs = read_pairs_table(run_dir)
        report.pairs_in_run = _cell_sizes(pairs)
        pairs = pairs.set_index("pair_id")
        pos = pairs.index.get_indexer(raw["pair_id"])
        raw, pos = _set_aside_unknown(raw, pos, "pair_id", "pair_id", "a pair", path, report,
                                      run_dir, drop_unknown)
        wrong = ((pairs["dag"].to_numpy()[pos] != raw["dag"].to_numpy())
                 | (pairs["setting"].to_numpy()[pos] != raw["setting"].to_numpy()))
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise InputFileError(
                f"{path}: line {int(raw['line'].iloc[i])}: columns dag/setting: pair "
                f"{raw['pair_id'].iloc[i]!r} is {pairs['dag'].to_numpy()[pos][i]}/"
                f"{pairs['setting'].to_numpy()[pos][i]} in {run_dir / runs.PAIRS}; fix the row")
    out = pd.DataFrame({c: raw[c].to_numpy() for c in JUDGEMENT_COLUMNS
                        if c in raw.columns})
    out["kind"] = "pair"
    out["correct"] = np.nan
    return out[list(JUDGEMENT_COLUMNS)].reset_index(drop=True), report


def run_design(run_dir: str | Path) -> tuple[int, int, int]:
    """``(DAGs, settings, pairs in the smallest cell)`` of a run, from ``RUN/pairs.csv``."""
    pairs = read_pairs_table(Path(run_dir))
    if pairs.empty:
        raise RunDirError(f"{Path(run_dir) / runs.PAIRS}: no pairs; regenerate the run")
    sizes = pairs.groupby(["dag", "setting"]).size()
    return int(pairs["dag"].nunique()), int(pairs["setting"].nunique()), int(sizes.min())
