"""The run directory: file names, column layouts, and safe writing. Standard library only.

A run directory is what ``cage-eval generate`` writes and every later command reads::

    RUN/
      manifest.json        resolved config, seeds, versions, schema version, run_id, "complete": true
      classifiers.csv      attribute, held-out accuracy, train/test sizes
      directions.csv       one row per attribute pair (GATEs, delta tau, p-values, direction, ...)
      alpha_sweep.csv      the same quantities over the alpha grid
      null_draws.csv       every null draw (permutation and random-direction)
      artifacts.npz        prior latents and classifier weights (see README)
      plots/*.png          delta tau over alpha, null histograms
      pairs.csv            counterfactual pairs (issue: image experiment)      -- PAIRS_COLUMNS
      images/*.png         opaque content-derived names
      sheets/*.png         contact sheets per DAG and setting
      hits_preview/        locally rendered HIT pages (cage-eval hits)
      hit_items.csv        local blinding map: which image is shown where    -- HIT_ITEMS_COLUMNS
      analysis_plan.json   frozen at publish time
      ledger.sqlite        MTurk publishing ledger (one environment per run)
      turkle_ledger.sqlite local Turkle server publishing ledger
      results.csv          collected answers, MTurk batch-results layout
      raw_answers/         raw answers archived by collect

Everything a later command needs is named here, once.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cage_eval.errors import RunDirError

SCHEMA_VERSION = 1

MANIFEST = "manifest.json"
CLASSIFIERS = "classifiers.csv"
DIRECTIONS = "directions.csv"
ALPHA_SWEEP = "alpha_sweep.csv"
NULL_DRAWS = "null_draws.csv"
ARTIFACTS = "artifacts.npz"
PLOTS_DIR = "plots"
PAIRS = "pairs.csv"
IMAGES_DIR = "images"
SHEETS_DIR = "sheets"
HIT_ITEMS = "hit_items.csv"
ANALYSIS_PLAN = "analysis_plan.json"
LEDGER = "ledger.sqlite"
TURKLE_LEDGER = "turkle_ledger.sqlite"
RESULTS = "results.csv"
RAW_ANSWERS_DIR = "raw_answers"

SETTINGS = ("same_source", "same_destination")
ROLES = ("cause", "effect")

#: pairs.csv: one row per counterfactual pair (cage_method.md section 5).
#: ``dag`` is ``"<cause>-><effect>"``; ``image_*`` are file names inside ``images/``;
#: ``source_*_id`` are dataset indices of the real starting images (equal for same_source);
#: ``target_*`` the attribute value the manipulation aims at (0/1), ``check_*`` the observation-space
#: classifier's probability that the manipulated attribute reached its target, ``ok_*`` 1/0,
#: ``attempts`` how many candidates were tried before this pair passed (1 = first try).
PAIRS_COLUMNS = (
    "pair_id",
    "dag",
    "cause",
    "effect",
    "setting",
    "source_cause_id",
    "source_effect_id",
    "image_source_cause",
    "image_source_effect",
    "image_cause",
    "image_effect",
    "target_cause",
    "target_effect",
    "alpha_cause",
    "alpha_effect",
    "check_cause",
    "check_effect",
    "ok_cause",
    "ok_effect",
    "attempts",
)

#: hit_items.csv: the local blinding map, never shown to workers. One row per HIT item.
#: ``kind`` is ``pair`` or ``attention``; ``role_top`` / ``role_bottom`` are ``cause``/``effect``
#: for pairs and ``clean``/``corrupt`` for attention checks; ``expected`` is the correct answer
#: (``top``/``bottom``) of an attention check, empty otherwise.
HIT_ITEMS_COLUMNS = (
    "item_id",
    "kind",
    "pair_id",
    "dag",
    "setting",
    "image_top",
    "image_bottom",
    "role_top",
    "role_bottom",
    "expected",
)

#: The form field a worker answers with, and its values.
ANSWER_FIELD = "choice"
ANSWER_VALUES = ("top", "bottom")

#: results.csv written by ``cage-eval collect`` (MTurk): the requester website's batch-results layout
#: (crowdsourcing.md section 2.12), with these HIT inputs and answers. ``Input.image_*`` hold the opaque
#: image file names (inside ``images/``), never URLs; ``RequesterAnnotation`` is ``cage-eval:<run_id>``.
RESULTS_META_COLUMNS = (
    "HITId", "HITTypeId", "Title", "Description", "Keywords", "Reward", "CreationTime",
    "MaxAssignments", "RequesterAnnotation", "AssignmentDurationInSeconds",
    "AutoApprovalDelayInSeconds", "Expiration", "NumberOfSimilarHITs", "LifetimeInSeconds",
    "AssignmentId", "WorkerId", "AssignmentStatus", "AcceptTime", "SubmitTime", "AutoApprovalTime",
    "ApprovalTime", "RejectionTime", "RequesterFeedback", "WorkTimeInSeconds",
    "LifetimeApprovalRate", "Last30DaysApprovalRate", "Last7DaysApprovalRate",
)
RESULTS_INPUT_COLUMNS = ("Input.item_id", "Input.image_top", "Input.image_bottom", "Input.run_id")
RESULTS_ANSWER_COLUMNS = ("Answer.choice", "Answer.item_id", "Answer.elapsed_ms")
RESULTS_TAIL_COLUMNS = ("Approve", "Reject")
RESULTS_COLUMNS = (
    RESULTS_META_COLUMNS + RESULTS_INPUT_COLUMNS + RESULTS_ANSWER_COLUMNS + RESULTS_TAIL_COLUMNS
)
REQUESTER_ANNOTATION_PREFIX = "cage-eval:"


def dag_name(cause: str, effect: str) -> str:
    """The DAG label used in every file: ``"thick->bright"``."""
    return f"{cause}->{effect}"


# --------------------------------------------------------------------------- atomic writes


def _file_mode() -> int:
    """The mode a plainly created file gets under the current umask (mkstemp would give 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    The file gets the permissions an ordinary ``open(path, "w")`` would give it, or ``mode``
    (e.g. ``0o600`` for secrets: the temporary file is private from its first byte).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE if mode is None else mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, mode: int | None = None
) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON (sorted keys, 2-space indent, trailing newline) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as CSV text with a fixed column order and ``\\n`` line endings."""
    rows = list(rows)
    # The csv module quotes values holding "\n" but not a lone "\r"; quote everything in that rare
    # case so that every value reads back exactly.
    has_cr = any(isinstance(v, str) and "\r" in v for row in rows for v in row.values())
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf,
        fieldnames=list(columns),
        lineterminator="\n",
        extrasaction="raise",
        quoting=csv.QUOTE_ALL if has_cr else csv.QUOTE_MINIMAL,
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def atomic_write_csv(
    path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write rows as CSV atomically, columns in the given order."""
    atomic_write_text(path, csv_text(rows, columns))


# --------------------------------------------------------------------------- run directories


@contextlib.contextmanager
def staged_run_dir(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Build a run directory in a hidden sibling and move it into place only on success.

    A failure (any exception) removes the staging directory, so no partial run directory is ever
    left looking complete. ``out`` must not exist, or be empty, unless ``force`` is set, in which
    case the old directory is replaced only after the new one is complete.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RunDirError(f"{out}: directory exists and is not empty; pass --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        stage.chmod(0o777 & ~(0o666 ^ _FILE_MODE))  # mkdtemp gives 0700; a run is an ordinary folder
    except OSError as exc:
        raise RunDirError(f"{out}: cannot create the output directory ({exc.strerror}); "
                          "choose a writable --out") from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
        os.replace(out, old / "run")
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(stage, out)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``KeyboardInterrupt`` while the block runs (main thread only).

    A terminated ``generate`` then unwinds like Ctrl-C, so :func:`staged_run_dir` removes its
    staging directory instead of leaving a hidden partial run behind.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def read_manifest(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``RUN/manifest.json``; raise :class:`RunDirError` when it is not a run."""
    run = Path(run)
    path = run / MANIFEST
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory; run `cage-eval generate --out {run}` first")
    if not path.is_file():
        raise RunDirError(f"{path}: missing; {run} is not a complete cage-eval run directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); regenerate the run") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise RunDirError(
            f"{path}: field schema_version is {manifest.get('schema_version')!r} "
            f"(expected {SCHEMA_VERSION}); regenerate the run with this version of cage-eval"
        )
    return manifest


def require_file(run: str | os.PathLike[str], name: str, *, made_by: str) -> Path:
    """Return ``RUN/name``, or raise :class:`RunDirError` saying which command makes it."""
    path = Path(run) / name
    if not path.exists():
        raise RunDirError(f"{path}: missing; run `{made_by}` first")
    return path
