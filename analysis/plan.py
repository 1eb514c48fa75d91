"""The pre-registered analysis plan, frozen into the run directory at publish time.

``cage-eval publish`` (MTurk) and ``cage-eval turkle publish`` call :func:`freeze_plan` before the
first HIT goes out, so the test, the multiple-testing correction and its family, the significance
level and the exclusion rules are fixed before any answer is seen. ``cage-eval analyze`` reads the
plan back with :func:`load_plan`, follows it, and reports every command-line option that overrides
it (:func:`plan_overrides`).

The file ``RUN/analysis_plan.json`` looks like::

    {"plan": {"alpha": 0.05, "correction": "bonferroni", ...},
     "plan_version": 2, "frozen_at": "2026-11-28T16:38:44Z"}
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError

PLAN_VERSION = 2
#: Plans written before the quality-control rules existed: read with those rules switched off
#: (what the analysis did when the plan was frozen).
LEGACY_PLAN_VERSIONS = (1,)

TESTS = ("binomial-two-sided",)
CORRECTIONS = ("bonferroni", "holm", "none")
FAMILIES = ("setting", "all")
DUPLICATE_POLICIES = ("keep-first", "keep-all")
PARTICIPANT_POLICIES = ("exclude-later", "keep")
#: What ``review`` does with a participant who failed attention checks, too few to be rejected:
#: approve the work, or (Prolific) ask the participant to return the submission.
BELOW_REJECTION_POLICIES = ("approve", "ask-return")
#: Prolific's fair-rejection rule: a submission may be rejected for attention only after this
#: many failed checks.
FAIR_REJECTION_MIN_FAILED = 2
#: The quality-control fields a version-1 plan lacks, and the values that reproduce its analysis.
LEGACY_QUALITY = {"min_response_time_s": 0.0, "duplicate_participants": "keep",
                  "blocked_participants": (), "reject_min_failed_checks": 1, "catch_trials": None,
                  "below_rejection": "approve"}


@dataclass(frozen=True)
class AnalysisPlan:
    """What ``analyze`` computes, decided before the data are seen.

    Parameters
    ----------
    test : str
        The headline test. Only ``"binomial-two-sided"``: the exact two-sided binomial test of the
        share of judgements preferring the cause-manipulated image against ``null_p`` (paper
        section 4.1, Table 2), p-value by the "minlike" convention of ``scipy.stats.binomtest``.
    correction : str
        ``"bonferroni"`` (the paper's choice), ``"holm"`` or ``"none"``; passed explicitly to
        ``statsmodels.stats.multitest.multipletests``.
    family : str
        ``"setting"``: each setting's DAGs form one family (the paper's choice); ``"all"``: every
        (DAG, setting) cell is one family.
    alpha : float
        Family-wise significance level, in (0, 1).
    null_p : float
        The preference rate under the null hypothesis (0.5: no preference).
    confidence_level : float
        Level of the Clopper-Pearson interval reported per cell (not multiplicity-adjusted).
    attention_min_accuracy : float
        Exclusion rule: a worker whose attention-check accuracy is below this share loses every
        judgement. Workers who answered no attention check are kept (there is nothing to judge
        them by); the report says how many there were.
    exclude_rejected : bool
        Drop assignments whose ``AssignmentStatus`` is ``Rejected`` (MTurk only; Turkle has no
        rejections).
    duplicates : str
        ``"keep-first"``: when one worker judged the same pair more than once, only the earliest
        judgement counts (all are flagged); ``"keep-all"`` counts them all.
    min_response_time_s : float
        Exclusion rule: an assignment answered faster than this many seconds (``SubmitTime`` -
        ``AcceptTime``, else ``WorkTimeInSeconds``) is dropped. 0 switches the rule off.
    duplicate_participants : str
        ``"exclude-later"``: a participant who already took part in an earlier study of the run,
        or who shares a hashed IP address with an earlier participant of the same study, loses
        the later answers; ``"keep"`` only reports them.
    blocked_participants : tuple of str
        Participant (worker) ids declared before the study whose answers never count (e.g. people
        who took part in a pilot run elsewhere).
    reject_min_failed_checks : int
        The fair-rejection rule of ``review``: work is rejected for failed attention checks only
        when the participant failed at least this many of them (Prolific requires 2); with fewer
        it is approved, and the analysis rules alone decide whether it counts.
    below_rejection : str
        What ``review`` does with a participant who failed attention checks, but fewer than
        ``reject_min_failed_checks``: ``"approve"`` the work (the analysis rules decide whether it
        counts), or ``"ask-return"``: on Prolific, ask the participant to return the submission
        (a returned submission is unpaid, its tasks go to someone else and its answers never
        reach the results); crowds without returns (MTurk, Turkle) approve.
    catch_trials : int or None
        How many catch-trial (attention-check) items the run's HITs hold, recorded at publish
        time; ``analyze`` warns when ``hit_items.csv`` no longer has that many. ``None``: not
        recorded.
    """

    test: str = "binomial-two-sided"
    correction: str = "bonferroni"
    family: str = "setting"
    alpha: float = 0.05
    null_p: float = 0.5
    confidence_level: float = 0.95
    attention_min_accuracy: float = 0.75
    exclude_rejected: bool = True
    duplicates: str = "keep-first"
    min_response_time_s: float = 0.0
    duplicate_participants: str = "exclude-later"
    blocked_participants: tuple[str, ...] = ()
    reject_min_failed_checks: int = FAIR_REJECTION_MIN_FAILED
    catch_trials: int | None = None
    below_rejection: str = "approve"

    def __post_init__(self) -> None:
        _choice("test", self.test, TESTS)
        _choice("correction", self.correction, CORRECTIONS)
        _choice("family", self.family, FAMILIES)
        _choice("duplicates", self.duplicates, DUPLICATE_POLICIES)
        _open_unit("alpha", self.alpha)
        _open_unit("null_p", self.null_p)
        _open_unit("confidence_level", self.confidence_level)
        acc = self.attention_min_accuracy
        if not isinstance(acc, (int, float)) or isinstance(acc, bool) or not 0.0 <= acc <= 1.0:
            raise ConfigError(
                f"attention_min_accuracy={acc!r}: must be a number in [0, 1] (0 keeps everyone)"
            )
        if not isinstance(self.exclude_rejected, bool):
            raise ConfigError(f"exclude_rejected={self.exclude_rejected!r}: must be true or false")
        _choice("duplicate_participants", self.duplicate_participants, PARTICIPANT_POLICIES)
        _choice("below_rejection", self.below_rejection, BELOW_REJECTION_POLICIES)
        t = self.min_response_time_s
        if (not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t)
                or t < 0):
            raise ConfigError(f"min_response_time_s={t!r}: must be a number of seconds >= 0 "
                              "(0 switches the rule off)")
        blocked = self.blocked_participants
        if isinstance(blocked, str) or not all(isinstance(b, str) and b.strip() == b and b
                                               for b in blocked):
            raise ConfigError("blocked_participants: must be a list of non-empty participant ids "
                              "without surrounding spaces")
        object.__setattr__(self, "blocked_participants", tuple(sorted(set(blocked))))
        for name in ("reject_min_failed_checks", "catch_trials"):
            value = getattr(self, name)
            if value is None and name == "catch_trials":
                continue
            low = 1 if name == "reject_min_failed_checks" else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name}={value!r}: must be a whole number >= {low}")

    def to_dict(self) -> dict[str, Any]:
        """The plan as a plain JSON-ready dict (field name -> value)."""
        out = dataclasses.asdict(self)
        out["blocked_participants"] = list(self.blocked_participants)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnalysisPlan:
        """Build a plan from :meth:`to_dict` output; unknown or mistyped fields raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"analysis plan: unknown field(s) {', '.join(unknown)}")
        data = dict(data)
        if isinstance(data.get("blocked_participants"), list):
            data["blocked_participants"] = tuple(data["blocked_participants"])
        return cls(**data)

    def replace(self, **changes: Any) -> AnalysisPlan:
        """A copy with some fields changed (validated like any plan)."""
        return dataclasses.replace(self, **changes)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: must be one of {', '.join(allowed)}")


def _open_unit(name: str, value: Any) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={value!r}: must be a number strictly between 0 and 1")


def plan_path(run_dir: str | Path) -> Path:
    """``RUN/analysis_plan.json``."""
    return Path(run_dir) / runs.ANALYSIS_PLAN


def freeze_plan(run_dir: str | Path, plan: AnalysisPlan | None = None) -> Path:
    """Write ``RUN/analysis_plan.json`` atomically unless it already exists; return its path.

    An existing plan is never overwritten (a pre-registration that could be rewritten after the
    data arrive would be worthless); it is validated instead, so a corrupt file is caught at
    publish time rather than at analysis time.

    Parameters
    ----------
    run_dir : path
        The run directory (must exist).
    plan : AnalysisPlan, optional
        The plan to freeze; the defaults (the paper's analysis) when omitted.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory; run `cage-eval generate` first")
    path = plan_path(run_dir)
    if path.exists():
        load_plan(run_dir)
        return path
    plan = plan if plan is not None else AnalysisPlan()
    frozen_at = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    files.atomic_write_json(
        path, {"plan_version": PLAN_VERSION, "frozen_at": frozen_at, "plan": plan.to_dict()}
    )
    return path


def load_plan(run_dir: str | Path) -> AnalysisPlan | None:
    """The frozen plan of a run, or ``None`` when none was frozen.

    Raises
    ------
    RunDirError
        The file exists but is not a valid plan.
    """
    path = plan_path(run_dir)
    if not path.exists():
        return None
    return read_plan_file(path)


def read_plan_file(path: str | Path) -> AnalysisPlan:
    """Read a plan JSON file (the ``RUN/analysis_plan.json`` layout)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable analysis plan ({exc}); restore it from a backup "
                          "or delete it and freeze a new one before publishing") from None
    version = data.get("plan_version") if isinstance(data, dict) else None
    if version not in (PLAN_VERSION, *LEGACY_PLAN_VERSIONS) or isinstance(version, bool):
        raise RunDirError(f"{path}: field plan_version is {version!r} (expected {PLAN_VERSION}); "
                          "this plan was written by another version of cage-eval")
    body = data.get("plan")
    if not isinstance(body, dict):
        raise RunDirError(f"{path}: field plan is missing or not an object")
    if version in LEGACY_PLAN_VERSIONS:
        extra = sorted(set(body) & set(LEGACY_QUALITY))
        if extra:
            raise RunDirError(f"{path}: a version-{version} plan cannot have field(s) "
                              f"{', '.join(extra)}; restore the original file")
        body = {**LEGACY_QUALITY, **body}
    try:
        return AnalysisPlan.from_dict(body)
    except (ConfigError, TypeError) as exc:
        raise RunDirError(f"{path}: invalid analysis plan: {exc}") from None


def plan_frozen_at(run_dir: str | Path) -> str | None:
    """The UTC time stamp at which the plan was frozen, or ``None``."""
    path = plan_path(run_dir)
    if not path.exists():
        return None
    read_plan_file(path)
    value = json.loads(path.read_text(encoding="utf-8")).get("frozen_at")
    return str(value) if value is not None else None


def plan_overrides(frozen: AnalysisPlan, used: AnalysisPlan) -> list[tuple[str, Any, Any]]:
    """Fields where ``used`` departs from ``frozen``: ``[(field, frozen_value, used_value), ...]``."""
    out = []
    for field in dataclasses.fields(AnalysisPlan):
        a, b = getattr(frozen, field.name), getattr(used, field.name)
        if a != b:
            out.append((field.name, a, b))
    return out
