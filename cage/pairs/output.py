"""A run's counterfactual pairs: which DAGs get them, making them, and what is written.

Shared by every experiment kind that makes pairs (``digits``, ``morphomnist``, ``generator``):

- :func:`select_dags`: a DAG is ``inferred`` when CAGE called that arrow (``->``/``<-``) in the
  ``[pairs] outcome`` variant under the run's rule, ``declared`` when it is listed in
  ``[pairs] dags`` (the known mechanism of the data, not something CAGE found). A ``?`` or ``⊥``
  call never makes pairs by itself;
- :func:`make_pairs`: same-source and same-destination pairs of every DAG through a
  :class:`cage.pairs.make.PairMaker`;
- :func:`write_pairs`: ``pairs.csv``, the contact sheets and the ``pairs`` entry of
  ``manifest.json`` (each DAG's source next to CAGE's call).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cage.config.experiment import OUTCOME_CHOICES, ExperimentConfig
from cage.config.sections import dataclass_from_section
from cage.pairs import difference as pair_difference
from cage.pairs.images import ImageStore, contact_sheet
from cage.pairs.make import LinearAttribute, PairConfig, PairMaker, PairSet, number_pairs
from cage_eval import files, runs
from cage_eval.errors import ConfigError, RunDirError


@dataclass(frozen=True)
class OutputOptions:
    """Section ``[pairs]`` keys that are not about making a pair."""

    outcome: str = "observation"
    dags: tuple[tuple[str, str], ...] = ()
    png_scale: int = 1
    sheet_pairs: int = 20


#: The ``[pairs]`` keys of :class:`OutputOptions`.
OUTPUT_KEYS = tuple(f.name for f in dataclasses.fields(OutputOptions))


def parse_dags(config: ExperimentConfig) -> tuple[tuple[str, str], ...]:
    """``[pairs] dags``: ``"cause->effect"`` strings, each an ordering of a ``[cage] pairs`` pair."""
    raw = config.kind_options.get("pairs", {}).get("dags", [])
    where = config.where("pairs", "dags")
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ConfigError(f"{where} = {raw!r}: expected a list of strings like [\"thick->bright\"]")
    dags: list[tuple[str, str]] = []
    for value in raw:
        parts = [p.strip() for p in value.split("->")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ConfigError(f"{where}: {value!r} is not a DAG; write \"cause->effect\", e.g. "
                              "\"thick->bright\"")
        if not any(set(p) == set(parts) for p in config.cage.pairs):
            raise ConfigError(f"{where}: {value!r}: {parts[0]} and {parts[1]} are not a pair of "
                              "[cage] pairs; add the pair there (CAGE's call and the intervention "
                              "directions come from it) or drop the DAG from [pairs] dags")
        if (parts[1], parts[0]) in dags:
            raise ConfigError(f"{where}: {value!r} and its reverse are both declared; declare one")
        if (parts[0], parts[1]) not in dags:
            dags.append((parts[0], parts[1]))
    return tuple(dags)


def parse_pair_sections(config: ExperimentConfig) -> tuple[PairConfig, OutputOptions]:
    """``[pairs]`` as the pair maker's settings (seeded by the experiment) and the output options."""
    pairs = dataclass_from_section(PairConfig, config, "pairs", exclude=("seed",) + OUTPUT_KEYS,
                                   overrides={"seed": config.seed})
    output = dataclass_from_section(OutputOptions, config, "pairs",
                                    only=tuple(k for k in OUTPUT_KEYS if k != "dags"),
                                    overrides={"dags": parse_dags(config)})
    return pairs, output


def pair_checks(pairs: PairConfig, output: OutputOptions) -> list[tuple[bool, str, str, Any, str]]:
    """The range checks of ``[pairs]``: ``(ok, section, key, value, what it must be)`` each."""
    return [
        (pairs.n_same_source >= 0, "pairs", "n_same_source", pairs.n_same_source, ">= 0"),
        (pairs.n_same_destination >= 0, "pairs", "n_same_destination",
         pairs.n_same_destination, ">= 0"),
        (0.5 < pairs.target_probability < 1, "pairs", "target_probability",
         pairs.target_probability, "in (0.5, 1)"),
        (pairs.alpha_min > 0, "pairs", "alpha_min", pairs.alpha_min, "positive"),
        (pairs.alpha_growth >= 1, "pairs", "alpha_growth", pairs.alpha_growth, ">= 1"),
        (pairs.alpha_steps >= 1, "pairs", "alpha_steps", pairs.alpha_steps, "at least 1"),
        (0 < pairs.check_threshold < 1, "pairs", "check_threshold", pairs.check_threshold,
         "in (0, 1)"),
        (0 <= pairs.max_invalid_share <= 1, "pairs", "max_invalid_share",
         pairs.max_invalid_share, "in [0, 1]"),
        (output.outcome in OUTCOME_CHOICES, "pairs", "outcome", output.outcome,
         "one of " + ", ".join(repr(o) for o in OUTCOME_CHOICES)),
        (1 <= output.png_scale <= 8, "pairs", "png_scale", output.png_scale, "in 1..8"),
        (output.sheet_pairs >= 1, "pairs", "sheet_pairs", output.sheet_pairs, "at least 1"),
    ]


def check_values(config: ExperimentConfig,
                 checks: Sequence[tuple[bool, str, str, Any, str]]) -> None:
    """Raise :class:`ConfigError` for the first failed ``(ok, section, key, value, need)``."""
    for ok, section, key, value, need in checks:
        if not ok:
            raise ConfigError(f"{config.where(section, key)} = {value!r}: must be {need}")


def call_text(d: Any) -> str:
    """CAGE's call in words: ``thick -> bright``, ``undetermined (?)``, ``independent (⊥)``."""
    if d.direction in ("->", "<-"):
        return f"{d.cause} -> {d.effect}"
    return "undetermined (?)" if d.direction == "?" else "independent (⊥)"


def _direction(result: Any, m1: str, m2: str, outcome: str) -> Any:
    try:
        return result.direction_for(m1, m2, outcome)
    except KeyError:
        return result.direction_for(m1, m2)


def select_dags(result: Any, config: ExperimentConfig, output: OutputOptions) -> tuple[
        list[tuple[str, str]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The DAGs to make pairs for, each with where it comes from (see the module docstring).

    Returns ``(dags, skipped, records)``; ``records`` holds one dict per DAG (source, CAGE's call
    and p(delta tau) in every outcome variant) for the manifest; its ``direction`` and
    ``delta_tau`` are in the orientation of ``pair`` (``[cage] pairs``' order).
    """
    dags: list[tuple[str, str]] = []
    skipped: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []

    def record(cause: str, effect: str, source: str, d: Any) -> dict[str, Any]:
        rows = [r for r in result.directions if {r.m1, r.m2} == {cause, effect}]
        return {
            "dag": runs.dag_name(cause, effect), "source": source, "outcome": d.outcome,
            "cage_call": call_text(d), "pair": [d.m1, d.m2], "direction": d.direction,
            "rule": d.rule, "reason": d.reason, "direction_paper": d.direction_paper,
            "delta_tau": d.delta_tau, "p_delta_tau": d.p_delta_tau,
            "p_gate_cause_to_effect": d.p_gate_12 if d.m1 == cause else d.p_gate_21,
            "p_gate_effect_to_cause": d.p_gate_21 if d.m1 == cause else d.p_gate_12,
            "sign_stable": d.sign_stable, "cos_normals": d.cos_normals,
            "calls_by_outcome": {r.outcome: {"call": call_text(r), "delta_tau": r.delta_tau,
                                             "p_delta_tau": r.p_delta_tau} for r in rows},
        }

    for m1, m2 in config.cage.pairs:
        d = _direction(result, m1, m2, output.outcome)
        if d.direction in ("->", "<-"):
            dags.append((d.cause, d.effect))
            records.append(record(d.cause, d.effect, "inferred", d))
        else:
            skipped.append({"m1": m1, "m2": m2, "outcome": d.outcome, "direction": d.direction,
                            "cage_call": call_text(d), "delta_tau": d.delta_tau,
                            "p_delta_tau": d.p_delta_tau,
                            "reason": "CAGE called no direction and none is declared; no pairs"})
    for cause, effect in output.dags:
        if (cause, effect) in dags:
            records[dags.index((cause, effect))]["declared"] = True
            continue
        pair = next(p for p in config.cage.pairs if set(p) == {cause, effect})
        dags.append((cause, effect))
        records.append(record(cause, effect, "declared", _direction(result, *pair, output.outcome)))
    for r in records:
        r.setdefault("declared", r["source"] == "declared")
    covered = [set(dag) for dag in dags]
    skipped = [s for s in skipped if {s["m1"], s["m2"]} not in covered]
    return dags, skipped, records


def check_separable(dags: Sequence[tuple[str, str]], result: Any, min_accuracy: float) -> None:
    """Refuse to manipulate an attribute whose latent classifier is below ``min_accuracy``."""
    for cause, effect in dags:
        for a in (cause, effect):
            acc = float(result.classifiers[a].accuracy_)
            if acc < min_accuracy:
                raise ConfigError(
                    f"DAG {runs.dag_name(cause, effect)}: attribute {a!r} is not separable enough "
                    f"to manipulate: its latent classifier's held-out accuracy is {acc:.3f} < "
                    f"[cage] min_accuracy = {min_accuracy}; remove the pair from [cage] pairs")


def linear_attribute(result: Any, pair: tuple[str, str], attr: str) -> LinearAttribute:
    """``attr``'s latent classifier and the direction CAGE intervened along in ``pair``."""
    clf = result.classifiers[attr]
    key = pair if pair in result.interventions else (pair[1], pair[0])
    direction = result.interventions.get(key, {}).get(attr, clf.normal_)
    return LinearAttribute(name=attr, coef=np.asarray(clf.coef_, dtype=np.float64),
                           intercept=float(clf.intercept_),
                           direction=np.asarray(direction, dtype=np.float64))


def open_store(run_dir: Path, scale: int) -> ImageStore:
    """The run's image store; an unwritable run directory is a :class:`RunDirError`."""
    try:
        return ImageStore(Path(run_dir) / runs.IMAGES_DIR, scale=scale)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot write images ({exc.strerror}); choose a writable "
                          "output directory") from None


def make_pairs(maker: PairMaker, store: ImageStore, result: Any, config: ExperimentConfig,
               dags: Sequence[tuple[str, str]], pairs: PairConfig, pool: np.ndarray,
               run_dir: Path, context: Any = None) -> list[PairSet]:
    """Same-source and same-destination pairs of every DAG (``pairs.n_same_*`` of each), with
    ``store`` open and ``context`` (e.g. deterministic torch) around the whole loop."""
    sets: list[PairSet] = []
    try:
        with store, context if context is not None else contextlib.nullcontext():
            for cause, effect in dags:
                pair = next(p for p in config.cage.pairs if set(p) == {cause, effect})
                c = linear_attribute(result, pair, cause)
                e = linear_attribute(result, pair, effect)
                if pairs.n_same_source:
                    sets.append(maker.same_source(c, e, pairs.n_same_source, pool))
                if pairs.n_same_destination:
                    sets.append(maker.same_destination(c, e, pairs.n_same_destination, pool))
    except OSError as exc:
        raise RunDirError(f"{run_dir}: writing the pair images failed ({exc}); free space or "
                          "choose another output directory") from None
    return sets


def sheet_name(cause: str, effect: str, setting: str) -> str:
    """File name of a contact sheet inside ``sheets/``."""
    return f"{cause}_to_{effect}__{setting}.png"


def _thumbnail(image: np.ndarray, px: int) -> np.ndarray:
    """``image`` shrunk (Lanczos) so that its larger side is at most ``px``."""
    h, w = image.shape[:2]
    if max(h, w) <= px:
        return image
    from PIL import Image

    k = px / max(h, w)
    small = Image.fromarray(image).resize((max(1, round(w * k)), max(1, round(h * k))),
                                          Image.Resampling.LANCZOS)
    return np.asarray(small, dtype=np.uint8)


#: With ``px`` set, sheet cells are enlarged to about this many pixels.
SHEET_CELL_PX = 96


def write_sheets(sets: list[PairSet], directory: Path, limit: int, px: int | None = None
                 ) -> list[str]:
    """One contact sheet per DAG and setting; returns the paths relative to the run directory.

    ``px``: shrink images to at most ``px`` pixels a side and enlarge cells to about
    :data:`SHEET_CELL_PX` (large generated images); None: images as they are, enlarged 3 times.
    """
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for s in sets:
        cause, effect = s.dag.split("->")
        if s.setting == "same_source":
            titles = ["source", f"{cause} changed", f"{effect} changed"]
        else:
            titles = ["source A", f"A: {cause} changed", "source B", f"B: {effect} changed"]
        labels = [f"{row['pair_id']} {lab}" for row, lab in zip(s.rows, s.sheet_labels,
                                                                 strict=True)]
        title = (f"{s.dag}  {s.setting.replace('_', '-')}  "
                 f"({len(s.rows)} pairs, first {min(limit, len(s.rows))} shown)")
        if px is None:
            png = contact_sheet(s.sheet_rows[:limit], column_titles=titles,
                                row_labels=labels[:limit], title=title)
        else:
            rows = [[_thumbnail(img, px) for img in row] for row in s.sheet_rows[:limit]]
            side = max(rows[0][0].shape[:2]) if rows else px
            png = contact_sheet(rows, column_titles=titles, row_labels=labels[:limit],
                                title=title,
                                scale=min(8, max(1, -(-SHEET_CELL_PX // max(side, 1)))))
        name = sheet_name(cause, effect, s.setting)
        files.atomic_write_bytes(directory / name, png)
        names.append(f"{runs.SHEETS_DIR}/{name}")
    return names


def write_pairs(run_dir: Path, sets: list[PairSet], dags: Sequence[tuple[str, str]],
                records: list[dict[str, Any]], skipped: list[dict[str, Any]],
                store: ImageStore, output: OutputOptions, pairs: PairConfig, decoded: int,
                sheet_px: int | None = None) -> dict[str, Any]:
    """Write ``pairs.csv`` and the sheets; return the ``pairs`` entry of ``manifest.json``."""
    rows = number_pairs(sets)
    pair_difference.measure_rows(rows, Path(run_dir) / runs.IMAGES_DIR)
    files.atomic_write_csv(Path(run_dir) / runs.PAIRS, rows,
                           runs.PAIRS_COLUMNS + pair_difference.COLUMNS)
    sheets = write_sheets(sets, Path(run_dir) / runs.SHEETS_DIR, output.sheet_pairs, sheet_px)
    for rec in records:
        mine = [s for s in sets if s.dag == rec["dag"]]
        rec["rows"] = sum(len(s.rows) for s in mine)
        rec["settings"] = {s.setting: len(s.rows) for s in mine}
        rec["sheets"] = [f"{runs.SHEETS_DIR}/" + sheet_name(*rec["dag"].split("->"), s.setting)
                         for s in mine]
        rec["difference"] = pair_difference.by_setting([r for r in rows if r["dag"] == rec["dag"]])
    return {
        "dags": [runs.dag_name(c, e) for c, e in dags],
        "dag_sources": records,
        "skipped": skipped,
        "rows": len(rows),
        "images": len(store.written),
        "png_scale": output.png_scale,
        "decoded": decoded,
        "invalid_images": sum(int(s.stats.get("invalid_images", 0)) for s in sets),
        "outcome": output.outcome,
        "sheets": sheets,
        "config": dataclasses.asdict(pairs),
        "stats": {f"{s.dag} {s.setting}": s.stats for s in sets},
        "difference_threshold": pair_difference.PERCEPTIBLE_MEAN_ABS,
        "difference_warnings": pair_difference.warnings_of({"dag_sources": records}),
    }
