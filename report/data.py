"""What ``cage-eval report`` shows, read from a finished run directory's files and nothing else.

:func:`read_report` gathers, as plain records: the run's facts (``manifest.json``), the
linear-separability table (``classifiers.csv``, paper Table 1), the directions (``directions.csv``,
paper Table 3) with one plain-language sentence per pair and variant (:mod:`report.explain`), the
plots (``plots/*.png``), the counterfactual pairs' provenance and contact sheets (the manifest's
``pairs`` entry, ``sheets/*.png``), the human answers once analysed (:mod:`report.answers`)
and the money spent (through a reader of the publishing ledgers that the caller passes,
:func:`cage_eval.cli.published.spending`). :mod:`report.html` renders them.

Standard library only (no torch, no numpy): the report of a run opens wherever the run does.
Only ``manifest.json``, ``classifiers.csv`` and ``directions.csv`` are required; every other part
may be missing, and the record then says so.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cage_eval import runs
from cage_eval.errors import CageEvalError, RunDirError
from report.answers import Answers, read_answers
from report.explain import COLUMNS as SENTENCE_COLUMNS
from report.explain import P_NAMES, DirectionRow, reasons_of, sentence

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: directions.csv columns read as text and as yes/no; every other column is a number.
TEXT_COLUMNS = ("m1", "m2", "outcome", "direction", "call", "cause", "effect", "rule", "reason",
                "direction_paper", "direction_controlled", "reason_controlled", "null", "lingam",
                "anm", "notears", "calibration_min_at", "calibration_max_at")
BOOL_COLUMNS = ("delta_tau_significant", "sign_stable", "balance_sign_stable", "separable",
                "calibration_sign_stable")
#: The numeric directions.csv columns the report shows (``None`` when a run lacks one).
NUMBER_COLUMNS = (
    "alpha", "k", "gate_12", "gate_21", "delta_tau", "p_gate_12", "p_gate_21", "p_delta_tau",
    "p_delta_tau_centred", "p_delta_tau_rotation", "gate_12_geometric", "gate_21_geometric",
    "delta_tau_geometric", "delta_tau_balanced", "delta_tau_m1_rare", "delta_tau_m2_rare",
    "n_null", "p_resolution", "cos_normals", "norm_w1", "norm_w2", "acc_1", "acc_2", "offset_1",
    "offset_2", "mmd", "p_mmd", "mmd_2", "p_mmd_2", "delta_tau_calibration_min",
    "delta_tau_calibration_max", "delta_tau_labels",
)
CLASSIFIER_COLUMNS = ("attribute", "space", "accuracy", "separable")
BASELINES = (("lingam", "LiNGAM"), ("anm", "ANM"), ("notears", "NOTEARS"))
#: A baseline column's value when its package was not installed.
UNAVAILABLE = "unavailable"
#: The one install line for the baselines (the same in the README and docs/baselines.md).
BASELINES_INSTALL = "pip install -e '.[baselines]'"

#: What a contact sheet of each setting shows, row by row.
SHEET_WORDS = {
    "same_source": ("each row one source image, it with the cause changed, it with the effect "
                    "changed"),
    "same_destination": ("each row source A with the cause changed and source B with the effect "
                         "changed, both aimed at the same attribute values"),
}

#: Short names of the outcome variants (tables, the top summary).
VARIANT_SHORT = {"latent": "eq. 8 latent", "observation": "eq. 9 observation",
                 "observation_conditional": "eq. 9 conditional"}


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RunFacts:
    """The manifest's facts about the run.

    Attributes
    ----------
    created : when ``manifest.json`` (written last) was written, UTC, from the file's time.
    rule, level : the call rule that fills ``direction`` and the significance level each call used
        (``[cage] level`` corrected for the study's tests; runs made before the correction: as set).
    study_level, correction, tests : ``[cage] level``, how it was corrected (``bonferroni`` or
        ``none``) and over how many calls (pairs x outcome variants).
    config, seeds, versions, setup : the manifest's entries as they are (JSON values).
    """

    run_id: str
    experiment: str
    description: str
    kind: str
    source: str
    created: str
    created_by: str
    seed: Any
    rule: str
    level: float | None
    k: Any
    alpha: Any
    n_null: int | None
    null: str
    outcomes: tuple[str, ...]
    config: dict[str, Any]
    seeds: dict[str, Any]
    versions: dict[str, Any]
    setup: dict[str, Any]
    schema_version: Any
    study_level: float | None = None
    correction: str = "none"
    tests: int = 1

    @property
    def p_resolution(self) -> float | None:
        """The smallest p-value ``n_null`` null draws can give, ``1 / (n_null + 1)``."""
        return None if self.n_null is None else 1.0 / (self.n_null + 1)

    @property
    def resolution_too_coarse(self) -> bool:
        """True when no p-value can reach the level (raise ``[cage] n_null``)."""
        return (self.p_resolution is not None and self.level is not None
                and self.p_resolution > self.level)


@dataclass(frozen=True)
class ClassifierRow:
    """One row of ``classifiers.csv`` (numbers ``None`` when blank)."""

    attribute: str
    space: str
    kind: str
    accuracy: float | None
    n_train: float | None
    n_test: float | None
    positive_rate: float | None
    weight_norm: float | None
    separable: bool


@dataclass(frozen=True)
class Separability:
    """Paper Table 1: the held-out accuracy of every attribute classifier, and the verdict."""

    rows: tuple[ClassifierRow, ...]
    min_accuracy: float | None

    @property
    def failing(self) -> tuple[ClassifierRow, ...]:
        """The classifiers flagged not separable."""
        return tuple(r for r in self.rows if not r.separable)

    @property
    def verdict(self) -> str:
        """One sentence: separable or not, and which attribute is the weakest."""
        threshold = "" if self.min_accuracy is None else f" (threshold {self.min_accuracy:g})"
        if not self.rows:
            return "classifiers.csv lists no classifier."
        if self.failing:
            names = ", ".join(f"{r.attribute} ({r.space}, {_num_text(r.accuracy)})"
                              for r in self.failing)
            return (f"NOT linearly separable{threshold}: {names}. CAGE's directions for pairs "
                    "with these attributes are unreliable.")
        latent = [r for r in self.rows if r.space == "latent" and r.accuracy is not None]
        weakest = min(latent or self.rows, key=lambda r: r.accuracy or 0.0)
        return (f"Every attribute is linearly separable{threshold}; the weakest is "
                f"{weakest.attribute} ({weakest.space}, held-out accuracy "
                f"{_num_text(weakest.accuracy)}).")


@dataclass(frozen=True)
class Direction:
    """One row of ``directions.csv``: ``values`` holds every column the report shows (text,
    yes/no as bool, numbers as float, ``None`` when blank or absent), ``sentence`` the verdict in
    words (:func:`report.explain.sentence`).

    ``accuracies`` are the held-out accuracies of the two *outcome* classifiers of this variant,
    from ``classifiers.csv`` in :attr:`space` (eq. 8: the latent classifiers; eq. 9: the
    observation classifier on decoded images), ``None`` when that file lacks one.
    """

    values: dict[str, Any]
    sentence: str
    accuracies: tuple[float | None, float | None] = (None, None)

    @property
    def space(self) -> str:
        """Where this variant's outcome classifiers read: ``latent`` or ``observation``."""
        return "latent" if self.values["outcome"] == "latent" else "observation"

    @property
    def variant(self) -> str:
        return VARIANT_SHORT.get(self.values["outcome"], self.values["outcome"])

    @property
    def call(self) -> str:
        """The call of the run's rule in words (``thick → bright``, ``undetermined (?)``)."""
        return call_text(self.values["direction"], self.values["m1"], self.values["m2"])

    @property
    def call_paper(self) -> str:
        return call_text(self.values["direction_paper"], self.values["m1"], self.values["m2"])

    @property
    def call_controlled(self) -> str:
        return call_text(self.values["direction_controlled"], self.values["m1"],
                         self.values["m2"])

    @property
    def reasons(self) -> tuple[str, ...]:
        """The reasons of the rule in force, in this version's names."""
        return tuple(reasons_of(self.values["reason"], self.values["outcome"]))

    @property
    def reasons_controlled(self) -> tuple[str, ...]:
        """Why the controlled rule drew no arrow (``rotation-null`` for eq. 9's rotation null,
        also in runs that called it ``geometry-only``)."""
        return tuple(reasons_of(self.values["reason_controlled"], self.values["outcome"]))

    @property
    def baselines(self) -> tuple[tuple[str, str], ...]:
        """``(method, verdict in words)`` for each baseline computed (empty when none was;
        a method whose package was missing is left out: :attr:`ReportData.baselines_missing`)."""
        out = []
        for column, name in BASELINES:
            verdict = self.values.get(column) or ""
            if verdict and verdict != UNAVAILABLE:
                out.append((name, call_text(verdict, self.values["m1"], self.values["m2"])
                            if verdict in ("->", "<-", "?", "⊥") else verdict))
        return tuple(out)


@dataclass(frozen=True)
class PairSummary:
    """One attribute pair: its directions (one per outcome variant) and the top-summary line."""

    m1: str
    m2: str
    directions: tuple[Direction, ...]

    @property
    def latent(self) -> dict[str, Any]:
        """The values every variant of this pair shares, all in the latent space: the latent
        classifiers' geometry, the MMD of conditioning vs intervening (the first row's)."""
        return self.directions[0].values

    @property
    def headline(self) -> str:
        """``CAGE finds ...`` for every variant, grouped by call."""
        phrases: dict[str, list[str]] = {}
        for d in self.directions:
            phrases.setdefault(_finding(d), []).append(d.variant)
        return "; ".join(f"{phrase} ({', '.join(variants)})"
                         for phrase, variants in phrases.items())


@dataclass(frozen=True)
class Figure:
    """A PNG of the run: ``path`` relative to the run directory, its pixel size and a caption."""

    path: str
    caption: str
    width: int
    height: int


@dataclass(frozen=True)
class PlotGroup:
    """The plots of one attribute pair."""

    m1: str
    m2: str
    figures: tuple[Figure, ...]


@dataclass(frozen=True)
class DagPairs:
    """The counterfactual pairs made for one DAG, and why that DAG (the manifest's record).

    Attributes
    ----------
    source : ``"inferred"`` (CAGE called this arrow) or ``"declared"`` (``[pairs] dags``).
    outcome, cage_call, delta_tau, p_delta_tau : CAGE's verdict in the variant pairs follow.
    calls_by_outcome : ``{variant: {"call", "delta_tau", "p_delta_tau"}}``.
    rows, settings : pairs made, in all and per setting (same-source first).
    sheets : the contact sheets found in the run.
    stats : per setting, the pair maker's counts (``success_first_alpha`` ...).
    """

    dag: str
    source: str
    declared: bool
    outcome: str
    cage_call: str
    delta_tau: float | None
    p_delta_tau: float | None
    calls_by_outcome: dict[str, dict[str, Any]]
    rows: int
    settings: dict[str, int]
    sheets: tuple[Figure, ...]
    stats: dict[str, dict[str, Any]]
    difference: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PairsInfo:
    """The manifest's ``pairs`` entry: DAGs with pairs, pairs CAGE skipped, extra sheets."""

    rows: int
    images: int
    outcome: str
    dags: tuple[DagPairs, ...]
    skipped: tuple[dict[str, Any], ...]
    other_sheets: tuple[Figure, ...]
    difference_warnings: tuple[str, ...] = ()
    difference_threshold: float | None = None


@dataclass(frozen=True)
class ReportData:
    """Everything the report shows (see the module docstring).

    Attributes
    ----------
    run_dir : the run directory read.
    pairs_tested : CAGE's verdicts, one :class:`PairSummary` per attribute pair.
    plots, other_plots, missing_plots : the engine's plots per pair, other PNGs in ``plots/``,
        and the expected plots not found (paths relative to the run).
    pairs : the counterfactual pairs, ``None`` when the experiment makes none.
    answers : the human answers (:class:`report.answers.Answers`).
    money, money_note : what the spending reader returned (:class:`cage_eval.cli.published.Spending`
        or ``None``: nothing published), or why it could not be read.
    """

    run_dir: Path
    facts: RunFacts
    separability: Separability
    pairs_tested: tuple[PairSummary, ...]
    plots: tuple[PlotGroup, ...]
    other_plots: tuple[Figure, ...]
    missing_plots: tuple[str, ...]
    pairs: PairsInfo | None
    answers: Answers
    money: Any | None = None
    money_note: str = ""

    @property
    def directions(self) -> tuple[Direction, ...]:
        return tuple(d for p in self.pairs_tested for d in p.directions)

    @property
    def has_baselines(self) -> bool:
        return any(d.baselines for d in self.directions)

    @property
    def baselines_missing(self) -> tuple[str, ...]:
        """The baselines the run asked for but could not compute (their package was not
        installed when it ran), in the order of :data:`BASELINES`."""
        return tuple(name for column, name in BASELINES
                     if any(d.values.get(column) == UNAVAILABLE for d in self.directions))

    @property
    def baselines_note(self) -> str:
        """Why some baselines are missing and how to get them, said once (empty when none is)."""
        names = self.baselines_missing
        if not names:
            return ""
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return (f"{listed} {'was' if len(names) == 1 else 'were'} not computed: their packages "
                f"(causal-learn for LiNGAM and ANM, gcastle for NOTEARS) were not installed when "
                f"this run was made. Install them with {BASELINES_INSTALL} from the root of "
                "your clone and generate the run again (docs/baselines.md).")

    @property
    def figures(self) -> tuple[Figure, ...]:
        """Every image the report inlines."""
        sheets = () if self.pairs is None else (
            *(s for d in self.pairs.dags for s in d.sheets), *self.pairs.other_sheets)
        return (*(f for g in self.plots for f in g.figures), *self.other_plots, *sheets)

    def outline(self) -> str:
        """One line on what the report holds (for the command's output)."""
        n_plots = sum(len(g.figures) for g in self.plots) + len(self.other_plots)
        n_sheets = 0 if self.pairs is None else len(self.figures) - n_plots
        answers = {"none": "no answers yet", "collected": "answers not analysed yet",
                   "stale": "analysis out of date"}.get(self.answers.status, "")
        if self.answers.status == "analysed":
            overall = self.answers.overall or {}
            answers = f"Table 2 from {overall.get('judgements') or 0} judgements"
            if self.answers.banner:
                answers += " (SIMULATED)"
        return (f"{len(self.pairs_tested)} pair(s), {len(self.directions)} verdict(s), "
                f"{n_plots} plot(s), {n_sheets} contact sheet(s), {answers}")


# --------------------------------------------------------------------------- helpers


def call_text(direction: str, m1: str, m2: str) -> str:
    """A call in words: ``m1 → m2``, ``m2 → m1``, ``independent (⊥)``, ``undetermined (?)``."""
    return {"->": f"{m1} → {m2}", "<-": f"{m2} → {m1}", "⊥": "independent (⊥)",
            "?": "undetermined (?)"}.get(direction, direction or "–")


def _finding(d: Direction) -> str:
    m1, m2 = d.values["m1"], d.values["m2"]
    if d.values["direction"] in ("->", "<-"):
        return f"CAGE finds {d.values['cause']} → {d.values['effect']}"
    if d.values["direction"] == "⊥":
        return f"CAGE finds no effect between {m1} and {m2}"
    return f"CAGE finds {m1} and {m2} associated but no direction"


def _num(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _num_text(x: float | None) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.3f}"


def _read_csv(run: Path, name: str, required: Iterable[str]) -> list[dict[str, str]]:
    path = runs.require_file(run, name, made_by=f"cage-eval generate --out {run}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); regenerate the run") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise RunDirError(f"{path}: missing column(s) {', '.join(missing)}; regenerate the run "
                          "with this version of cage-eval")
    return rows


def png_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG file, ``None`` when it is not a readable PNG."""
    try:
        with path.open("rb") as fh:
            head = fh.read(24)
    except OSError:
        return None
    if len(head) < 24 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return (int(width), int(height)) if width and height else None


def _figure(run: Path, rel: str, caption: str) -> Figure | None:
    """A figure for ``RUN/rel`` when it is a PNG inside the run directory, else ``None``."""
    path = (run / rel)
    try:
        inside = path.resolve().is_relative_to(run.resolve())
    except OSError:
        return None
    size = png_size(path) if inside else None
    return None if size is None else Figure(rel, caption, *size)


# --------------------------------------------------------------------------- the parts


def read_facts(run: Path, manifest: Mapping[str, Any]) -> RunFacts:
    """The run's facts from its manifest (and the manifest file's time)."""
    config = manifest.get("config") or {}
    exp = config.get("experiment") or {}
    cage = config.get("cage") or {}
    mtime = (run / runs.MANIFEST).stat().st_mtime
    created = _dt.datetime.fromtimestamp(mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    n_null = cage.get("n_null")
    study_level = cage.get("level")
    correction = str(cage.get("correction", "none"))
    tests = max(1, len(cage.get("pairs") or ()) * len(cage.get("outcomes") or ()))
    level = study_level
    if correction == "bonferroni" and isinstance(study_level, (int, float)):
        level = study_level / tests
    return RunFacts(
        run_id=str(manifest.get("run_id", "")), experiment=str(manifest.get("experiment", "")),
        description=str(exp.get("description", "")), kind=str(exp.get("kind", "")),
        source=str(exp.get("source", "")), created=created,
        created_by=str(manifest.get("created_by", "")),
        seed=(manifest.get("seeds") or {}).get("master", exp.get("seed")),
        rule=str(cage.get("rule", "paper")), level=level, k=cage.get("k"),
        alpha=cage.get("alpha"), n_null=n_null if isinstance(n_null, int) else None,
        null=str(cage.get("null", "")), outcomes=tuple(cage.get("outcomes") or ()),
        config=dict(config), seeds=dict(manifest.get("seeds") or {}),
        versions=dict(manifest.get("versions") or {}), setup=dict(manifest.get("setup") or {}),
        schema_version=manifest.get("schema_version"),
        study_level=study_level, correction=correction, tests=tests,
    )


def read_separability(run: Path, min_accuracy: float | None) -> Separability:
    """Paper Table 1 from ``classifiers.csv``."""
    rows = []
    for r in _read_csv(run, runs.CLASSIFIERS, CLASSIFIER_COLUMNS):
        rows.append(ClassifierRow(
            attribute=r["attribute"], space=r["space"], kind=r.get("kind", ""),
            accuracy=_num(r["accuracy"]), n_train=_num(r.get("n_train")),
            n_test=_num(r.get("n_test")), positive_rate=_num(r.get("positive_rate")),
            weight_norm=_num(r.get("weight_norm")), separable=r["separable"] == "yes"))
    return Separability(tuple(rows), min_accuracy)


def parse_direction(row: Mapping[str, str],
                    accuracy: Mapping[tuple[str, str], float | None] | None = None) -> Direction:
    """One ``directions.csv`` row as a :class:`Direction` (with its sentence); ``accuracy``
    maps ``(attribute, space)`` to the held-out accuracy in ``classifiers.csv``."""
    values: dict[str, Any] = {c: row.get(c, "") for c in TEXT_COLUMNS}
    values.update({c: row.get(c) == "yes" for c in BOOL_COLUMNS})
    values.update({c: _num(row.get(c)) for c in NUMBER_COLUMNS})
    space = "latent" if values["outcome"] == "latent" else "observation"
    accuracy = accuracy or {}
    accs = (accuracy.get((values["m1"], space)), accuracy.get((values["m2"], space)))
    return Direction(values, sentence(DirectionRow.from_csv(row)), accs)


def read_directions(run: Path, separability: Separability | None = None
                    ) -> tuple[PairSummary, ...]:
    """Paper Table 3 from ``directions.csv``, grouped by attribute pair (file order); each
    variant's outcome accuracies from ``separability`` (``classifiers.csv``)."""
    rows = _read_csv(run, runs.DIRECTIONS, SENTENCE_COLUMNS)
    accuracy = {} if separability is None else {
        (c.attribute, c.space): c.accuracy for c in separability.rows}
    groups: dict[tuple[str, str], list[Direction]] = {}
    for row in rows:
        groups.setdefault((row["m1"], row["m2"]), []).append(parse_direction(row, accuracy))
    return tuple(PairSummary(m1, m2, tuple(ds)) for (m1, m2), ds in groups.items())


def plot_caption(kind: str, m1: str, m2: str, outcome: str = "") -> str:
    """What one of the engine's plots shows."""
    if kind == "delta_tau":
        return (f"Δτ = |GATE({m1}→{m2})| − |GATE({m2}→{m1})| over α, one panel per outcome "
                "variant, each against its own decision null: eq. 8 (latent) as a central 95 % "
                "band at every α with what the two hyperplanes' geometry alone predicts "
                "(dotted); eq. 9 (observation), whose nulls are drawn at the headline α only, "
                "as the central 95 % of its decision null and of its rotation null there. The "
                "GATEs underneath.")
    if kind == "null":
        variant = VARIANT_SHORT.get(outcome, outcome)
        return (f"Null distributions ({variant}) of GATE({m1}→{m2}), GATE({m2}→{m1}) and Δτ at "
                "the headline α, the observed value in red; above each panel its p-values by "
                f"null kind, named as in the tables ({P_NAMES['p_delta_tau']}, "
                f"{P_NAMES['p_delta_tau_centred']}, {P_NAMES['p_delta_tau_rotation']}).")
    return (f"MMD² between conditioning on and intervening on {m1} and on {m2} over α "
            f"(latent space); underneath, the permutation {P_NAMES['p_mmd']} of each point "
            "against the level.")


def read_plots(run: Path, pairs: Iterable[PairSummary]
               ) -> tuple[tuple[PlotGroup, ...], tuple[Figure, ...], tuple[str, ...]]:
    """The engine's plots per pair, the other PNGs in ``plots/``, and the expected ones missing."""
    directory = run / runs.PLOTS_DIR
    present = sorted(p.name for p in directory.glob("*.png")) if directory.is_dir() else []
    claimed: set[str] = set()
    groups, missing = [], []
    for pair in pairs:
        m1, m2 = pair.m1, pair.m2
        wanted = [(f"delta_tau__{m1}__{m2}.png", plot_caption("delta_tau", m1, m2)),
                  (f"mmd__{m1}__{m2}.png", plot_caption("mmd", m1, m2))]
        wanted += [(f"null__{m1}__{m2}__{d.values['outcome']}.png",
                    plot_caption("null", m1, m2, d.values["outcome"])) for d in pair.directions]
        figures = []
        for name, caption in wanted:
            claimed.add(name)
            fig = _figure(run, f"{runs.PLOTS_DIR}/{name}", caption)
            if fig is None:
                missing.append(f"{runs.PLOTS_DIR}/{name}")
            else:
                figures.append(fig)
        groups.append(PlotGroup(m1, m2, tuple(figures)))
    others = [_figure(run, f"{runs.PLOTS_DIR}/{n}", n) for n in present if n not in claimed]
    return tuple(groups), tuple(f for f in others if f is not None), tuple(missing)


def read_pairs(run: Path, manifest: Mapping[str, Any]) -> PairsInfo | None:
    """The counterfactual pairs' provenance and contact sheets (``None`` when the experiment
    made no pairs)."""
    info = manifest.get("pairs")
    if not isinstance(info, Mapping):
        return None
    stats = info.get("stats") or {}
    claimed: set[str] = set()
    dags = []
    for rec in info.get("dag_sources") or []:
        dag = str(rec.get("dag", ""))
        settings = {str(k): int(v) for k, v in (rec.get("settings") or {}).items()}
        order = sorted(settings, key=lambda s: (s != "same_source", s))
        sheets = []
        for rel in rec.get("sheets") or []:
            claimed.add(str(rel))
            setting = next((s for s in order if str(rel).endswith(f"__{s}.png")), "")
            caption = f"{dag}, {setting.replace('_', '-')}: " + SHEET_WORDS.get(
                setting, "the pairs") + " (labelled for you; annotators never see these sheets)."
            fig = _figure(run, str(rel), caption)
            if fig is not None:
                sheets.append(fig)
        dags.append(DagPairs(
            dag=dag, source=str(rec.get("source", "")), declared=bool(rec.get("declared")),
            outcome=str(rec.get("outcome", "")), cage_call=str(rec.get("cage_call", "")),
            delta_tau=_maybe_float(rec.get("delta_tau")),
            p_delta_tau=_maybe_float(rec.get("p_delta_tau")),
            calls_by_outcome=dict(rec.get("calls_by_outcome") or {}),
            rows=int(rec.get("rows", 0)), settings={s: settings[s] for s in order},
            sheets=tuple(sheets),
            stats={s: dict(stats.get(f"{dag} {s}") or {}) for s in order},
            difference=dict(rec.get("difference") or {})))
    directory = run / runs.SHEETS_DIR
    extra = sorted(f"{runs.SHEETS_DIR}/{p.name}" for p in directory.glob("*.png")) \
        if directory.is_dir() else []
    others = [_figure(run, rel, rel.split("/", 1)[1]) for rel in extra if rel not in claimed]
    return PairsInfo(
        rows=int(info.get("rows", 0)), images=int(info.get("images", 0)),
        outcome=str(info.get("outcome", "")), dags=tuple(dags),
        skipped=tuple(dict(s) for s in info.get("skipped") or []),
        other_sheets=tuple(f for f in others if f is not None),
        difference_warnings=tuple(str(t) for t in info.get("difference_warnings") or []),
        difference_threshold=_maybe_float(info.get("difference_threshold")))


def _maybe_float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- everything

#: Reads the money of a run's publication (``None`` when nothing was published); the CLI passes
#: :func:`cage_eval.cli.published.spending`.
SpendingReader = Callable[[Path], Any]


def read_report(run: str | Path, *, spending: SpendingReader | None = None) -> ReportData:
    """Gather everything the report shows from the run directory ``run``.

    Parameters
    ----------
    run : a complete run directory (made by ``cage-eval generate``).
    spending : reads the money of the run's publication; its record (or ``None``) is shown as
        it is. Without it the report has no money section.

    Raises
    ------
    RunDirError
        Not a run directory, an incomplete run (``manifest.json`` missing or not ``complete``),
        or a missing or malformed ``classifiers.csv`` / ``directions.csv``.
    """
    run = Path(run)
    manifest = runs.read_manifest(run)
    if manifest.get("complete") is not True:
        raise RunDirError(f"{run / runs.MANIFEST}: the run is not complete; regenerate it with "
                          f"`cage-eval generate --out {run} --force`")
    facts = read_facts(run, manifest)
    min_accuracy = (facts.config.get("cage") or {}).get("min_accuracy")
    separability = read_separability(run, min_accuracy)
    pairs_tested = read_directions(run, separability)
    plots, other_plots, missing = read_plots(run, pairs_tested)
    money, money_note = None, ""
    if spending is not None:
        try:
            money = spending(run)
        except CageEvalError as exc:
            money_note = f"The publishing ledger could not be read: {exc}"
    return ReportData(
        run_dir=run, facts=facts, separability=separability, pairs_tested=pairs_tested,
        plots=plots, other_plots=other_plots, missing_plots=missing,
        pairs=read_pairs(run, manifest), answers=read_answers(run, facts.run_id),
        money=money, money_note=money_note)
