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
      .cage-eval.lock      lock of publish/collect/review/expire/report (and generate --force)
      .cage-eval-run       marker: cage-eval made this directory (which command, run id, entries)
      analysis/            cage-eval analyze's outputs (table2.*, workers.csv, analysis.json)
      report.html          cage-eval report: everything above on one self-contained page

Everything a later command needs is named here, once.
"""

from __future__ import annotations

import json
import os
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
PROLIFIC_LEDGER = "prolific_ledger.sqlite"
RESULTS = "results.csv"
RAW_ANSWERS_DIR = "raw_answers"
LOCK = ".cage-eval.lock"
#: The marker every directory cage-eval builds carries (JSON: ``made_by``, ``run_id``,
#: ``entries``): ``--force`` replaces only a directory that carries one (cage_eval.files).
RUN_MARKER = ".cage-eval-run"
#: ``PARENT/.<name>.cage-eval.lock``: the lock a command holds on a directory it is building
#: (``generate --out``, ``export-batch --out``) from its first step to the last.
TARGET_LOCK_SUFFIX = ".cage-eval.lock"
HITS_PREVIEW_DIR = "hits_preview"
INVALID_ANSWERS = "invalid_answers.csv"

#: What makes a directory a study that no command may replace: a publishing ledger (MTurk,
#: Turkle or Prolific), the blinding map, the frozen analysis plan, or collected answers.
STUDY_FILES = (LEDGER, TURKLE_LEDGER, HIT_ITEMS, ANALYSIS_PLAN, RESULTS, RAW_ANSWERS_DIR,
               PROLIFIC_LEDGER)
ANALYSIS_DIR = "analysis"
REPORT = "report.html"

#: What ``generate`` writes at the top of a run (a run made before the marker existed is
#: recognised by its complete manifest and may hold these and :data:`LATER_ENTRIES`, no more).
RUN_ENTRIES = (MANIFEST, CLASSIFIERS, DIRECTIONS, ALPHA_SWEEP, NULL_DRAWS, ARTIFACTS, PLOTS_DIR,
               PAIRS, IMAGES_DIR, SHEETS_DIR, RUN_MARKER)
#: What later commands add to a run (hits, publish, collect, analyze, report, the locks).
LATER_ENTRIES = (HIT_ITEMS, HITS_PREVIEW_DIR, ANALYSIS_PLAN, LEDGER, TURKLE_LEDGER,
                 PROLIFIC_LEDGER, RESULTS, RAW_ANSWERS_DIR, INVALID_ANSWERS, LOCK, ANALYSIS_DIR,
                 REPORT)
#: The names no command may write a report over, wherever they are.
RUN_FILE_NAMES = frozenset(RUN_ENTRIES + LATER_ENTRIES) - {REPORT}

SETTINGS = ("same_source", "same_destination")
ROLES = ("cause", "effect")

#: pairs.csv: one row per counterfactual pair (docs/method.md §7).
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
#: (docs/platforms.md §2.12), with these HIT inputs and answers. ``Input.image_*`` hold the opaque
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

#: ``cage-eval simulate`` marks every row it writes as synthetic: worker, assignment and HIT ids
#: start with this prefix, ``RequesterAnnotation`` is ``cage-eval:<run_id>;simulated`` and the
#: Title says so. ``analyze`` counts rows whose WorkerId has the prefix and prints a banner.
SIMULATED_WORKER_PREFIX = "SIM-"
SIMULATED_ANNOTATION_SUFFIX = ";simulated"


def dag_name(cause: str, effect: str) -> str:
    """The DAG label used in every file: ``"thick->bright"``."""
    return f"{cause}->{effect}"


def hit_domain(run: str | os.PathLike[str], given: str | None = None) -> str:
    """The HIT wording to use: ``given``, else the run's ``[hits] domain`` (the manifest's
    ``pairs.hit_domain``), else ``digits``."""
    if given:
        return given
    try:
        pairs = read_manifest(run).get("pairs") or {}
    except RunDirError:
        return "digits"
    domain = pairs.get("hit_domain") if isinstance(pairs, dict) else None
    return domain if isinstance(domain, str) and domain else "digits"


def read_manifest(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check ``RUN/manifest.json``; raise :class:`RunDirError` when it is not a run."""
    run = Path(run)
    path = run / MANIFEST
    if not run.is_dir():
        raise RunDirError(f"{run}: no such run directory; run `cage-eval generate --out {run}` first")
    if not path.is_file():
        raise RunDirError(f"{path}: missing; {run} is not a cage-eval run directory. "
                          + _what_to_do(run))
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


def _what_to_do(run: Path) -> str:
    """For a directory that is not a run: name the runs inside it, or how to make one."""
    try:
        inside = sorted(p for p in run.iterdir()
                        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file())
    except OSError:
        inside = []
    if inside:
        names = ", ".join(str(p) for p in inside[:5]) + (", ..." if len(inside) > 5 else "")
        return f"It holds the run(s) {names}: name one of them, e.g. {inside[0]}"
    return (f"Name a directory made by `cage-eval generate --out DIR`, or make one with "
            f"`cage-eval generate --out {run}`")


def require_file(run: str | os.PathLike[str], name: str, *, made_by: str) -> Path:
    """Return ``RUN/name``, or raise :class:`RunDirError` saying which command makes it."""
    path = Path(run) / name
    if not path.exists():
        raise RunDirError(f"{path}: missing; run `{made_by}` first")
    return path


#: The name of every p-value column of ``directions.csv`` (``{m1}``, ``{m2}``: the attributes),
#: said by what it tests and the same everywhere: the report, the sentences, the plots, the
#: ``generate`` summary (docs/report.md lists them).
P_VALUE_NAMES = {
    "p_gate_12": "p(GATE {m1}→{m2})",
    "p_gate_21": "p(GATE {m2}→{m1})",
    "p_delta_tau": "p(Δτ ≠ 0)",
    "p_delta_tau_centred": "p(Δτ off-centre)",
    "p_delta_tau_rotation": "p(Δτ rotation)",
    "p_mmd": "p(MMD)",
}


def p_value_name(column: str, m1: str = "m1", m2: str = "m2") -> str:
    """The name of the p-value in ``column`` (:data:`P_VALUE_NAMES`)."""
    return P_VALUE_NAMES[column].format(m1=m1, m2=m2)
