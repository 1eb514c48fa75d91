"""Quality control a researcher can pre-register, shared by every crowd backend.

The rules live in the frozen analysis plan (:class:`analysis.plan.AnalysisPlan`), so a study's
exclusions are declared before its first answer. This module holds what the crowd backends
(MTurk, Turkle, Prolific) and ``analyze`` share:

* :data:`RULES`: every exclusion rule, in the order ``analyze`` applies it, with the reason that
  marks an excluded row and the sentence a pre-registration would carry
  (:func:`describe_rules`).
* The fair-rejection rule (:func:`fair_rejection`, :func:`review_verdicts`): a participant's work
  may be rejected for failed attention checks only after at least
  ``plan.reject_min_failed_checks`` (Prolific: 2) failed checks; otherwise it is approved (on
  Prolific: the participant is asked to return the submission) and the analysis rules decide
  whether it counts.
* Response times from the answer time stamps (:func:`response_seconds`).
* Duplicate participants (:func:`duplicate_participants`): the same participant id in an earlier
  study of the same run, a blocked id, or the same hashed IP address as another participant of
  the same study. IP addresses are only ever handled as salted hashes (:func:`hash_ip`).
* The plan a ``publish`` command freezes (:func:`publish_plan`, :func:`read_block_list`).

Nothing here calls a crowd or writes a file.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plan import AnalysisPlan
from cage_eval.errors import ConfigError, InputFileError


@dataclass(frozen=True)
class Rule:
    """One exclusion rule: its key (analysis.json), the reason it writes on an excluded row, and
    a short name for tables."""

    key: str
    reason: str
    label: str


#: The exclusion rules in the order they are applied; a row excluded by one rule is not counted
#: again by a later one.
RULES: tuple[Rule, ...] = (
    Rule("duplicate_assignment", "duplicate assignment id", "repeated assignment id"),
    Rule("rejected", "rejected assignment", "rejected assignment"),
    Rule("blocked_participant", "blocked participant", "blocked participant"),
    Rule("earlier_study", "participant of an earlier study", "took part in an earlier study"),
    Rule("shared_ip", "same IP as another participant", "same IP as another participant"),
    Rule("attention", "attention checks failed", "failed attention checks"),
    Rule("too_fast", "answered too fast", "answered too fast"),
    Rule("repeat_judgement", "same worker, same pair again", "same pair judged again"),
)
RULE_BY_KEY = {r.key: r for r in RULES}
RULE_BY_REASON = {r.reason: r for r in RULES}

#: Optional columns of an MTurk-style results file that carry what the duplicate-participant
#: rule needs (written by crowd backends that know them; absent columns switch the check off).
STUDY_COLUMN = "Crowd.StudyId"
IP_HASH_COLUMN = "Crowd.IpHash"
#: The same, in the tidy layout.
TIDY_STUDY_COLUMN = "study_id"
TIDY_IP_HASH_COLUMN = "ip_hash"


def describe_rules(plan: AnalysisPlan) -> list[str]:
    """One sentence per rule, with its threshold, as a pre-registration would state it."""
    block = len(plan.blocked_participants)
    return [
        "Repeated assignment ids: only the first row of an assignment counts.",
        ("Rejected assignments are excluded." if plan.exclude_rejected
         else "Rejected assignments are kept."),
        (f"Blocked participants: the answers of {block} participant id(s) declared before the "
         "study never count." if block else "Blocked participants: none declared."),
        ("Duplicate participants: a participant id seen in an earlier study of the run, or a "
         "hashed IP address shared with an earlier participant of the same study, loses the "
         "later answers." if plan.duplicate_participants == "exclude-later" else
         "Duplicate participants: reported, not excluded."),
        (f"Attention checks (catch trials: one image plainly damaged): a participant whose "
         f"accuracy on them is below {plan.attention_min_accuracy:.0%} loses every judgement; "
         "participants without a check are kept."),
        (f"Minimum response time: an assignment answered in less than "
         f"{plan.min_response_time_s:g} s (SubmitTime - AcceptTime) is excluded."
         if plan.min_response_time_s > 0 else "Minimum response time: none."),
        ("A participant judging the same pair twice: only the earliest judgement counts."
         if plan.duplicates == "keep-first" else
         "A participant judging the same pair twice: every judgement counts."),
        (f"Payment (fair rejection): work is rejected for attention only after "
         f"{plan.reject_min_failed_checks} or more failed checks; otherwise it is approved (or "
         "a return is asked for) and excluded by the rules above only."
         if plan.below_rejection == "approve" else
         f"Payment (fair rejection): work is rejected for attention only after "
         f"{plan.reject_min_failed_checks} or more failed checks; with fewer failed checks the "
         "participant is asked to return the submission (Prolific; MTurk and Turkle approve), "
         "and the answers of a returned submission never count."),
        (f"Catch trials: {plan.catch_trials} attention-check item(s) among the HITs."
         if plan.catch_trials is not None else "Catch trials: not recorded in the plan."),
    ]


# --------------------------------------------------------------------------- fair rejection

#: Verdicts of the fair-rejection rule.
PASS = "pass"          # no failed check
RETURN = "return"      # failed checks, too few to reject: approve (MTurk) / ask for a return
REJECT = "reject"      # enough failed checks: rejection allowed


@dataclass(frozen=True)
class ParticipantVerdict:
    """What the fair-rejection rule allows for one participant."""

    participant: str
    checks: int
    failed: int
    verdict: str           # PASS | RETURN | REJECT
    excluded_by_analysis: bool

    def explain(self, plan: AnalysisPlan) -> str:
        """One sentence for the review listing."""
        if self.verdict == PASS:
            return f"{self.checks} attention check(s), none failed"
        what = (f"{self.failed} of {self.checks} attention check(s) failed; ")
        if self.verdict == REJECT:
            return what + (f"rejection allowed (fair-rejection rule: "
                           f"{plan.reject_min_failed_checks} or more)")
        return what + (f"not rejected (fair-rejection rule needs "
                       f"{plan.reject_min_failed_checks}); "
                       + ("excluded from the analysis by the attention rule"
                          if self.excluded_by_analysis else "still counted by the analysis"))


def fair_rejection(failed: int, plan: AnalysisPlan) -> str:
    """:data:`PASS`, :data:`RETURN` or :data:`REJECT` for a participant with ``failed`` failed
    attention checks under the plan's ``reject_min_failed_checks``."""
    if failed < 0:
        raise ValueError(f"failed checks must be >= 0, got {failed}")
    if failed == 0:
        return PASS
    return REJECT if failed >= plan.reject_min_failed_checks else RETURN


def review_verdicts(checks: Iterable[tuple[str, bool]], plan: AnalysisPlan
                    ) -> dict[str, ParticipantVerdict]:
    """The fair-rejection verdict of every participant who answered an attention check.

    Parameters
    ----------
    checks : ``(participant id, passed)`` for every attention check answered, across all of the
        participant's assignments or submissions in the run (a missing answer is a failure).
    plan : the frozen plan (``reject_min_failed_checks``, ``attention_min_accuracy``).
    """
    answered: dict[str, list[bool]] = {}
    for participant, passed in checks:
        answered.setdefault(participant, []).append(bool(passed))
    out = {}
    for participant, results in answered.items():
        failed = results.count(False)
        accuracy = (len(results) - failed) / len(results)
        out[participant] = ParticipantVerdict(
            participant=participant, checks=len(results), failed=failed,
            verdict=fair_rejection(failed, plan),
            excluded_by_analysis=accuracy < plan.attention_min_accuracy - 1e-12)
    return out


# --------------------------------------------------------------------------- response times

_ZONES = {"UTC": 0, "GMT": 0, "Z": 0, "PST": -8, "PDT": -7, "MST": -7, "MDT": -6, "CST": -6,
          "CDT": -5, "EST": -5, "EDT": -4}


def parse_times(times: Sequence[str] | pd.Series) -> np.ndarray:
    """Seconds since the epoch for MTurk/Turkle time stamps (``Sat Nov 28 16:38:44 UTC 2026``)
    or ISO 8601 ones with a zone (``2026-11-28T16:38:44Z``, ``...+00:00``); ``inf`` when
    unreadable or the zone is unknown. Vectorised: a million stamps take about a second."""
    values = times.tolist() if isinstance(times, pd.Series) else list(times)
    text = pd.Series([v if isinstance(v, str) else "" for v in values], dtype=object).str.strip()
    out = np.full(len(text), np.inf)
    if not len(text):
        return out
    parts = text.str.extract(r"^(.+?)\s([A-Z]{1,5})\s(\d{4})$")
    offset = parts[1].map(_ZONES)
    stamp = pd.to_datetime(parts[0] + " " + parts[2], format="%a %b %d %H:%M:%S %Y",
                           errors="coerce")
    ok = (offset.notna() & stamp.notna()).to_numpy()
    if ok.any():
        secs = (stamp[ok] - pd.Timestamp(0)).dt.total_seconds().to_numpy()
        out[ok] = secs - 3600 * offset[ok].to_numpy(dtype=float)
    iso = (~ok) & text.str.fullmatch(r"\d{4}-\d\d-\d\d[T ][0-9:.]+(Z|[+-]\d\d:?\d\d)").to_numpy()
    if iso.any():
        stamp = pd.to_datetime(text[iso], errors="coerce", utc=True, format="ISO8601")
        good = stamp.notna().to_numpy()
        idx = np.flatnonzero(iso)[good]
        out[idx] = (stamp[good] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    return out


def response_seconds(accept: Sequence[str] | pd.Series, submit: Sequence[str] | pd.Series,
                     work_time_s: Sequence[float] | pd.Series) -> np.ndarray:
    """Seconds from accepting an assignment to submitting it, per row.

    ``SubmitTime - AcceptTime`` where both time stamps are readable, else ``WorkTimeInSeconds``
    (which MTurk and Turkle compute the same way), else NaN (the minimum-time rule then keeps
    the row).
    """
    a, s = parse_times(accept), parse_times(submit)
    work = np.array(work_time_s, dtype=float)
    both = np.isfinite(a) & np.isfinite(s)
    out = work.copy()
    out[both] = s[both] - a[both]
    return out


def too_fast(seconds: np.ndarray, plan: AnalysisPlan) -> np.ndarray:
    """Rows answered faster than the plan's minimum (never rows without a time)."""
    if plan.min_response_time_s <= 0:
        return np.zeros(len(seconds), dtype=bool)
    seconds = np.asarray(seconds, dtype=float)
    return np.isfinite(seconds) & (seconds < plan.min_response_time_s)


# --------------------------------------------------------------------------- participants


def hash_ip(ip: str, salt: bytes) -> str:
    """A salted hash of an IP address (HMAC-SHA256, 16 hex characters): two visits from one
    address match within a study; the address itself is never stored. ``salt`` is a secret
    kept with the server (never in a run directory)."""
    if not salt:
        raise ValueError("hash_ip needs a non-empty secret salt")
    return hmac.new(salt, ip.strip().encode("utf-8"), hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class DuplicateParticipants:
    """Rows caught by the duplicate-participant rule and why (one mask per rule)."""

    blocked: np.ndarray
    earlier_study: np.ndarray
    shared_ip: np.ndarray
    #: (participant, study, earlier study) for every participant seen in an earlier study.
    repeats: list[tuple[str, str, str]]
    #: (study, participant, first participant with that IP hash).
    ip_matches: list[tuple[str, str, str]]


def duplicate_participants(participant: Sequence[str], study: Sequence[str],
                           ip_hash: Sequence[str], order: Sequence[float],
                           plan: AnalysisPlan) -> DuplicateParticipants:
    """Find duplicate participants among answer rows.

    Parameters
    ----------
    participant, study, ip_hash : per row; ``study`` and ``ip_hash`` may be empty strings (then
        those checks do not apply to the row).
    order : per row, when it was submitted (seconds; ``inf`` when unknown, then file order).
    plan : ``blocked_participants`` names ids whose rows are caught.

    Studies are ordered by their earliest submission; a participant's rows in any study after the
    first one they answered in are caught. Within one study, participants sharing an IP hash are
    ordered by their first submission and all but the first are caught.
    """
    p = np.asarray(participant, dtype=object)
    s = np.asarray(study, dtype=object)
    ip = np.asarray(ip_hash, dtype=object)
    n = len(p)
    t = np.asarray(order, dtype=float)
    rank = np.lexsort((np.arange(n), t))            # submission order, then file order
    position = np.empty(n, dtype=np.int64)
    position[rank] = np.arange(n)
    blocked = np.isin(p, np.asarray(plan.blocked_participants, dtype=object)) if (
        plan.blocked_participants) else np.zeros(n, dtype=bool)

    earlier = np.zeros(n, dtype=bool)
    repeats: list[tuple[str, str, str]] = []
    has_study = s != ""
    if has_study.any():
        rows = pd.DataFrame({"p": p[has_study], "s": s[has_study],
                             "pos": position[has_study]}, index=np.flatnonzero(has_study))
        rows["start"] = rows.groupby("s")["pos"].transform("min")
        ordered = rows.sort_values(["start", "pos"], kind="stable")
        first = ordered.groupby("p", sort=False)["s"].first()
        later = rows["s"].to_numpy() != first.reindex(rows["p"]).to_numpy()
        earlier[rows.index[later]] = True
        hits = rows[later].drop_duplicates(["p", "s"])
        repeats = sorted((str(a), str(b), str(first[a])) for a, b in zip(hits["p"], hits["s"],
                                                                          strict=True))

    shared = np.zeros(n, dtype=bool)
    matches: list[tuple[str, str, str]] = []
    has_ip = ip != ""
    if has_ip.any():
        rows = pd.DataFrame({"p": p[has_ip], "s": s[has_ip], "ip": ip[has_ip],
                             "pos": position[has_ip]}, index=np.flatnonzero(has_ip))
        owner = rows.sort_values("pos", kind="stable").groupby(["s", "ip"], sort=False)["p"].first()
        first_owner = owner.reindex(pd.MultiIndex.from_arrays([rows["s"], rows["ip"]])).to_numpy()
        other = rows["p"].to_numpy() != first_owner
        shared[rows.index[other]] = True
        hits = rows[other].assign(owner=first_owner[other]).drop_duplicates(["s", "p", "owner"])
        matches = sorted((str(a), str(b), str(c)) for a, b, c in zip(
            hits["s"], hits["p"], hits["owner"], strict=True))
    return DuplicateParticipants(blocked=blocked, earlier_study=earlier, shared_ip=shared,
                                 repeats=repeats, ip_matches=matches)


# --------------------------------------------------------------------------- publishing


def read_block_list(path: str | Path) -> tuple[str, ...]:
    """Participant ids from a text file: one per line; blank lines and ``#`` comments ignored.
    A CSV with a header naming ``worker_id``, ``WorkerId``, ``participant_id`` or
    ``PROLIFIC_PID`` (e.g. a Prolific export) is read from that column."""
    import csv
    import io

    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: unreadable block list ({exc}); give a UTF-8 text file "
                             "with one participant id per line") from None
    lines = [ln.strip() for ln in text.splitlines()]
    header = next((ln for ln in lines if ln and not ln.startswith("#")), "")
    columns = [c.strip() for c in next(csv.reader([header]))] if header else []
    named = [c for c in ("worker_id", "WorkerId", "participant_id", "PROLIFIC_PID",
                         "Participant id") if c in columns]
    if "," in header and named:
        rows = csv.DictReader(io.StringIO(text))
        ids = [str(r.get(named[0]) or "").strip() for r in rows]
    elif "," in header:
        raise InputFileError(f"{path}: line 1: a CSV block list needs a column named worker_id, "
                             "WorkerId, participant_id or PROLIFIC_PID")
    else:
        ids = [ln for ln in lines if ln and not ln.startswith("#")]
    for i, value in enumerate(ids, start=1):
        if any(ch.isspace() for ch in value):
            raise InputFileError(f"{path}: entry {i}: {value[:40]!r} contains spaces; write one "
                                 "participant id per line")
    return tuple(sorted({v for v in ids if v}))


def publish_plan(base: AnalysisPlan | None = None, *, catch_trials: int | None = None,
                 min_response_time_s: float | None = None,
                 block_list: str | Path | None = None,
                 reject_min_failed_checks: int | None = None,
                 below_rejection: str | None = None) -> AnalysisPlan:
    """The plan a ``publish`` command freezes: ``base`` (the defaults when omitted) with the
    quality-control options given on its command line and the number of catch trials in the
    HITs about to be published. ``None`` leaves a field as ``base`` has it."""
    plan = base if base is not None else AnalysisPlan()
    changes: dict[str, object] = {}
    if catch_trials is not None:
        changes["catch_trials"] = catch_trials
    if min_response_time_s is not None:
        changes["min_response_time_s"] = float(min_response_time_s)
    if block_list is not None:
        changes["blocked_participants"] = tuple(sorted(
            set(plan.blocked_participants) | set(read_block_list(block_list))))
    if reject_min_failed_checks is not None:
        changes["reject_min_failed_checks"] = reject_min_failed_checks
    if below_rejection is not None:
        changes["below_rejection"] = below_rejection
    try:
        return plan.replace(**changes) if changes else plan
    except ConfigError as exc:
        raise ConfigError(f"quality control: {exc}") from None


def count_by_rule(reasons: Sequence[str], is_pair: Sequence[bool]) -> dict[str, dict[str, int]]:
    """Rows and pair judgements excluded by each rule of :data:`RULES` (every rule present)."""
    reasons = np.asarray(reasons, dtype=object)
    is_pair = np.asarray(is_pair, dtype=bool)
    return {r.key: {"rows": int((reasons == r.reason).sum()),
                    "pair_judgements": int(((reasons == r.reason) & is_pair).sum())}
            for r in RULES}


def rule_table(counts: Mapping[str, Mapping[str, int]], plan: AnalysisPlan,
               participants: Mapping[str, int]) -> list[dict[str, object]]:
    """Rows of the "exclusions by rule" table: rule, threshold, participants and pair judgements
    excluded (``participants``: rule key -> participants who lost answers to it)."""
    thresholds = {
        "duplicate_assignment": "first row kept",
        "rejected": "excluded" if plan.exclude_rejected else "kept",
        "blocked_participant": f"{len(plan.blocked_participants)} id(s) declared",
        "earlier_study": plan.duplicate_participants,
        "shared_ip": plan.duplicate_participants,
        "attention": f"accuracy < {plan.attention_min_accuracy:g}",
        "too_fast": (f"< {plan.min_response_time_s:g} s" if plan.min_response_time_s > 0
                     else "off"),
        "repeat_judgement": plan.duplicates,
    }
    return [{"rule": r.key, "label": r.label, "threshold": thresholds[r.key],
             "participants": int(participants.get(r.key, 0)),
             "rows": int(counts.get(r.key, {}).get("rows", 0)),
             "pair_judgements": int(counts.get(r.key, {}).get("pair_judgements", 0))}
            for r in RULES]
