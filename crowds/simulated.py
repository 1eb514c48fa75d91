"""A simulated crowd: answers to a run's HITs from planted preferences, marked synthetic throughout.

``cage-eval simulate RUN`` lets a user try ``analyze`` (and everything downstream) before any
person has answered. Every HIT item of ``RUN/hit_items.csv`` gets ``annotators`` answers from
distinct simulated workers, written in the layout ``cage-eval collect`` writes
(``cage_eval.runs.RESULTS_COLUMNS``), so the analysis reads them like real answers.

The model, per (DAG, setting) cell with planted rate ``p`` (the probability of preferring the
cause-manipulated image):

- an honest worker ``w`` judging pair ``i`` prefers the cause image with probability
  ``sigmoid(logit(p) + u_w + v_i)``, ``u_w ~ N(0, annotator_sd^2)`` (worker bias),
  ``v_i ~ N(0, pair_sd^2)`` (pair difficulty: correlated judgements within a pair). With both
  at 0 (the default) every judgement is an independent Bernoulli(p); otherwise the expected rate
  is pulled towards 0.5;
- honest workers answer every attention check correctly;
- a spammer (a ``spammers`` share of the worker pool) clicks top or bottom at random on every
  item, attention checks included, and fast.

Nothing here pretends to be real: HIT, assignment and worker ids start with ``SIM-``
(:data:`cage_eval.runs.SIMULATED_WORKER_PREFIX`), ``RequesterAnnotation`` is
``cage-eval:<run_id>;simulated``, the Title and Description say "SIMULATED", the reward is $0.00
and the times start on 1 January 2000. ``analyze`` counts the ``SIM-`` rows and prints a banner in
every output. The same run, options and seed give the same file, byte for byte. Nothing here
prints.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError

TITLE = "SIMULATED (cage-eval simulate): which image looks more real?"
DESCRIPTION = ("Simulated answers drawn from planted preferences; no person saw these images. "
               "For trying the analysis only.")
#: Obviously fictitious times: the first HIT is created at this instant.
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)


class ResultsTaken(RunDirError):
    """The target file holds real answers, or is where a published run's answers go."""


@dataclass(frozen=True)
class CrowdModel:
    """How the simulated crowd answers (see the module docstring).

    Attributes
    ----------
    annotators : distinct workers per HIT item (``MaxAssignments``).
    workers : size of the worker pool (at least ``annotators``).
    annotator_sd : standard deviation of a worker's bias on the logit scale.
    pair_sd : standard deviation of a pair's difficulty on the logit scale.
    spammers : share of the pool answering at random, in [0, 1).
    seed : random seed; the same run, model and seed give the same answers.
    """

    annotators: int = 3
    workers: int = 20
    annotator_sd: float = 0.0
    pair_sd: float = 0.0
    spammers: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.annotators < 1:
            raise ConfigError(f"annotators={self.annotators}: must be at least 1")
        if self.workers < self.annotators:
            raise ConfigError(f"workers={self.workers}: the pool must hold at least the "
                              f"{self.annotators} distinct annotators each item needs")
        for name in ("annotator_sd", "pair_sd"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}={value!r}: must be a finite number >= 0")
        if not 0.0 <= self.spammers < 1.0:
            raise ConfigError(f"spammers={self.spammers!r}: must be a share in [0, 1)")


@dataclass(frozen=True)
class SimulationReport:
    """What :func:`simulate_results` wrote.

    Attributes
    ----------
    path : the results file.
    rows : assignments written (items x annotators).
    items, attention_items : HIT items answered, of which attention checks.
    spammers : the WorkerIds of the simulated spammers in the pool.
    planted : the planted rate per (dag, setting).
    observed : per (dag, setting), ``(judgements preferring the cause image, judgements)``.
    """

    path: Path
    rows: int
    items: int
    attention_items: int
    spammers: tuple[str, ...]
    planted: dict[tuple[str, str], float]
    observed: dict[tuple[str, str], tuple[int, int]]


# --------------------------------------------------------------------------- planted preferences


def parse_preferences(specs: Sequence[str], cells: Sequence[tuple[str, str]]
                      ) -> dict[tuple[str, str], float]:
    """Planted P(prefer the cause-manipulated image) for every (dag, setting) of ``cells``.

    Each spec is ``P`` (every cell), ``SETTING=P``, ``DAG=P`` or ``DAG/SETTING=P``, e.g.
    ``thick->bright/same_source=0.8``; a more specific spec wins over a less specific one
    whatever their order, and cells no spec names get 0.5 (no preference).
    """
    dags = {d for d, _ in cells}
    settings = {s for _, s in cells}
    levels: list[dict[tuple[str, str], float]] = [{}, {}, {}, {}]
    for spec in specs:
        target, _, value = spec.rpartition("=")
        p = _probability(spec, value)
        if not target:
            keys, level = list(cells), 0
        elif "/" in target:
            dag, _, setting = target.rpartition("/")
            _known(spec, dag, dags, "DAG")
            _known(spec, setting, settings, "setting")
            keys, level = [(dag, setting)], 3
        elif target in settings:
            keys, level = [c for c in cells if c[1] == target], 1
        else:
            _known(spec, target, dags, "DAG or setting")
            keys, level = [c for c in cells if c[0] == target], 2
        for key in keys:
            levels[level][key] = p
    out = {}
    for cell in cells:
        out[cell] = next((lv[cell] for lv in reversed(levels) if cell in lv), 0.5)
    return out


def _probability(spec: str, value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        p = float("nan")
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ConfigError(f"preference {spec!r}: {value!r} is not a probability in [0, 1]; "
                          "write e.g. 0.7, thick->bright=0.8 or thick->bright/same_source=0.8")
    return p


def _known(spec: str, name: str, known: set[str], what: str) -> None:
    if name not in known:
        raise ConfigError(f"preference {spec!r}: {what} {name!r} is not in the run (it has "
                          f"{', '.join(sorted(known))})")


# --------------------------------------------------------------------------- simulation


def _rng(run_id: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{run_id}|{seed}|simulate".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _sigmoid_shift(p: float, shift: float) -> float:
    if shift == 0.0 or p in (0.0, 1.0):
        return p
    return 1.0 / (1.0 + math.exp(-(math.log(p / (1.0 - p)) + shift)))


def _check_target(run_dir: Path, path: Path) -> None:
    """Refuse to overwrite real answers or to write beside a real publication."""
    published = [n for n in (runs.LEDGER, runs.TURKLE_LEDGER) if (run_dir / n).exists()]
    if published and path.resolve() == (run_dir / runs.RESULTS).resolve():
        raise ResultsTaken(f"{run_dir / published[0]}: the run was published, and "
                          f"{path} is where its real answers are collected; write the "
                          "simulated answers to another file")
    if not path.exists():
        return
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError, csv.Error):
        rows = [{}]
    real = [r for r in rows
            if not str(r.get("WorkerId") or "").startswith(runs.SIMULATED_WORKER_PREFIX)]
    if real or not rows:
        raise ResultsTaken(f"{path}: exists and holds answers that are not simulated; move it "
                          "away or write the simulated answers to another file")


def simulate_results(run_dir: str | Path, preferences: dict[tuple[str, str], float],
                     model: CrowdModel, out: str | Path | None = None) -> SimulationReport:
    """Answer every HIT item of a run with simulated workers; write a results CSV atomically.

    Parameters
    ----------
    run_dir : a run with ``hit_items.csv`` (made by ``cage-eval hits RUN``).
    preferences : planted rate per (dag, setting), e.g. from :func:`parse_preferences`; every
        cell of the run must be present.
    model : the crowd.
    out : the file to write; default ``RUN/results.csv``. An existing file is replaced only if
        every row in it is simulated; ``RUN/results.csv`` of a published run is never written.

    Returns
    -------
    SimulationReport
    """
    from crowds.answers import mturk_time
    from hitgen.items import read_hit_items

    run_dir = Path(run_dir)
    run_id = str(runs.read_manifest(run_dir).get("run_id") or "")
    items = read_hit_items(run_dir)
    path = Path(out) if out is not None else run_dir / runs.RESULTS
    _check_target(run_dir, path)
    cells = sorted({(it.dag, it.setting) for it in items if it.kind == "pair"})
    missing = [c for c in cells if c not in preferences]
    if missing:
        raise ValueError(f"no planted preference for {missing[0]}")

    rng = _rng(run_id, model.seed)
    n_spam = round(model.spammers * model.workers)
    spammer = np.zeros(model.workers, dtype=bool)
    spammer[rng.permutation(model.workers)[:n_spam]] = True
    worker_bias = rng.normal(0.0, model.annotator_sd, size=model.workers)
    pair_bias = rng.normal(0.0, model.pair_sd, size=len(items))
    annotation = runs.REQUESTER_ANNOTATION_PREFIX + run_id + runs.SIMULATED_ANNOTATION_SUFFIX
    observed = {c: [0, 0] for c in cells}
    rows: list[dict[str, str]] = []
    clock = EPOCH
    for i, item in enumerate(items, start=1):
        created = EPOCH + dt.timedelta(seconds=i)
        for j, w in enumerate(rng.choice(model.workers, size=model.annotators, replace=False)):
            if spammer[w]:
                choice = ("top", "bottom")[int(rng.integers(2))]
                work = int(rng.integers(1, 5))
            elif item.kind == "pair":
                p = _sigmoid_shift(preferences[(item.dag, item.setting)],
                                   float(worker_bias[w] + pair_bias[i - 1]))
                role = "cause" if rng.random() < p else "effect"
                choice = "top" if item.role_top == role else "bottom"
                work = int(rng.integers(5, 61))
            else:
                choice = item.expected
                work = int(rng.integers(5, 61))
            if item.kind == "pair":
                cell = observed[(item.dag, item.setting)]
                cell[0] += item.role_of(choice) == "cause"
                cell[1] += 1
            clock += dt.timedelta(seconds=work + 1)
            rows.append(_row(item, run_id, annotation, model.annotators, i, j, int(w), choice,
                             work, created, clock, mturk_time))
    files.atomic_write_csv(path, rows, runs.RESULTS_COLUMNS)
    return SimulationReport(
        path=path, rows=len(rows), items=len(items),
        attention_items=sum(it.kind == "attention" for it in items),
        spammers=tuple(_worker_id(int(w)) for w in np.flatnonzero(spammer)),
        planted={c: preferences[c] for c in cells},
        observed={c: (v[0], v[1]) for c, v in observed.items()})


def _worker_id(w: int) -> str:
    return f"{runs.SIMULATED_WORKER_PREFIX}W{w + 1:04d}"


def _row(item, run_id: str, annotation: str, annotators: int, i: int, j: int, w: int,
         choice: str, work: int, created: dt.datetime, submit: dt.datetime, fmt_time
         ) -> dict[str, str]:
    prefix = runs.SIMULATED_WORKER_PREFIX
    row = dict.fromkeys(runs.RESULTS_COLUMNS, "")
    row.update({
        "HITId": f"{prefix}HIT{i:06d}", "HITTypeId": f"{prefix}TYPE", "Title": TITLE,
        "Description": DESCRIPTION, "Keywords": "simulated", "Reward": "$0.00",
        "CreationTime": fmt_time(created), "MaxAssignments": str(annotators),
        "RequesterAnnotation": annotation, "AssignmentDurationInSeconds": "600",
        "AssignmentId": f"{prefix}A{i:06d}{j:02d}", "WorkerId": _worker_id(w),
        "AssignmentStatus": "Submitted",
        "AcceptTime": fmt_time(submit - dt.timedelta(seconds=work)),
        "SubmitTime": fmt_time(submit), "WorkTimeInSeconds": str(work),
        "Input.item_id": item.item_id, "Input.image_top": item.image_top,
        "Input.image_bottom": item.image_bottom, "Input.run_id": run_id,
        "Answer.choice": choice, "Answer.item_id": item.item_id,
        "Answer.elapsed_ms": str(1000 * work),
    })
    return row
