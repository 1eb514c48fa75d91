"""Plain-language sentences for CAGE's verdicts: what a person reads first (summary and report).

Every sentence states the call, the numbers behind it and, for ``?``, each control that stopped an
arrow (:mod:`cage.engine.rules`). Pure string building: no printing, and no import beyond the
standard library, so that readers of a finished run (``cage-eval report``) get the same words
from a ``directions.csv`` row (:func:`sentence_from_row`) as ``generate`` gets from a
:class:`cage.run.result.PairDirection` (:func:`sentence`) without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: How each outcome variant is named in sentences.
VARIANT_WORDS = {
    "latent": "eq. 8, latent classifiers",
    "observation": "eq. 9, observation classifier on decoded images",
    "observation_conditional": "eq. 9, conditional intervention",
}


@dataclass(frozen=True)
class DirectionRow:
    """The fields of one ``directions.csv`` row that a sentence reads, parsed from the CSV text
    (floats with 10 significant digits, ``nan`` or empty for missing values)."""

    m1: str
    m2: str
    outcome: str
    direction: str
    cause: str
    effect: str
    rule: str
    reason: str
    direction_paper: str
    direction_controlled: str
    reason_controlled: str
    null: str
    delta_tau: float
    p_delta_tau: float
    p_gate_12: float
    p_gate_21: float
    p_delta_tau_centred: float
    p_delta_tau_rotation: float
    delta_tau_geometric: float
    delta_tau_balanced: float
    delta_tau_m1_rare: float
    delta_tau_m2_rare: float
    delta_tau_calibration_min: float = math.nan
    delta_tau_calibration_max: float = math.nan
    calibration_min_at: str = ""
    calibration_max_at: str = ""

    @classmethod
    def from_direction(cls, d: Any) -> DirectionRow:
        """The fields of a :class:`cage.run.result.PairDirection` (or anything with them)."""
        return cls(**{f.name: getattr(d, f.name) for f in fields(cls)})

    @classmethod
    def from_csv(cls, row: Mapping[str, str]) -> DirectionRow:
        """Parse a ``csv.DictReader`` row of ``directions.csv``.

        Raises
        ------
        KeyError
            A column of :data:`COLUMNS` is missing from ``row``.
        """
        values: dict[str, str | float] = {}
        for f in fields(cls):
            if f.name in OPTIONAL_COLUMNS and f.name not in row:
                continue  # a run made before the calibration control
            text = row[f.name]
            values[f.name] = text if f.type == "str" else _float(text)
        return cls(**values)  # type: ignore[arg-type]


#: Columns a sentence reads when present (runs made before the calibration control lack them).
OPTIONAL_COLUMNS = ("delta_tau_calibration_min", "delta_tau_calibration_max",
                    "calibration_min_at", "calibration_max_at")
#: The directions.csv columns a sentence needs.
COLUMNS = tuple(f.name for f in fields(DirectionRow) if f.name not in OPTIONAL_COLUMNS)


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _reason_clause(d: DirectionRow, reason: str) -> str:
    if reason == "geometry-only" and d.outcome == "latent":
        return (f"eq. 8's delta tau ({d.delta_tau:+.3f}) is what the two hyperplanes' offsets and "
                f"norms alone predict ({d.delta_tau_geometric:+.3f}), so it cannot tell a cause "
                "from an effect")
    if reason == "geometry-only":
        return (f"delta tau is inside the rotation null (p = {d.p_delta_tau_rotation:.3f}): the "
                "same pair geometry pointed elsewhere in the latent space does as much")
    if reason == "not-significant":
        return (f"delta tau ({d.delta_tau:+.3f}) is inside its {d.null} null around the null's "
                f"centre (p = {d.p_delta_tau_centred:.3f})")
    if reason == "balance-driven":
        return (f"its sign follows the label balance ({d.delta_tau_m1_rare:+.3f} with {d.m1} "
                f"rare, {d.delta_tau_m2_rare:+.3f} with {d.m2} rare, "
                f"{d.delta_tau_balanced:+.3f} with both balanced)")
    if reason == "calibration-driven":
        return (f"its sign follows the judges' calibration (delta tau from "
                f"{d.delta_tau_calibration_min:+.3f} with {d.calibration_min_at} to "
                f"{d.delta_tau_calibration_max:+.3f} with {d.calibration_max_at}; each recalibration "
                "keeps the judge's accuracy)")
    if reason == "alpha-unstable":
        return "its sign changes over the alpha grid"
    if reason == "falsified":
        return ("every other control passed, but on this generator the same arrow passed them with "
                "the data's mechanism reversed or removed (the experiment's [cage] falsified), so "
                "an arrow here does not follow the mechanism")
    return reason


def sentence(d: Any) -> str:
    """One paragraph on ``d`` (a :class:`cage.run.result.PairDirection` or a :class:`DirectionRow`):
    the call of its rule, why, and the other rule's call."""
    if not isinstance(d, DirectionRow):
        d = DirectionRow.from_direction(d)
    variant = VARIANT_WORDS.get(d.outcome, d.outcome)
    reasons = [r for r in d.reason.split("+") if r]
    if d.direction in ("->", "<-"):
        text = (f"CAGE finds {d.cause} -> {d.effect} ({variant}): delta tau = {d.delta_tau:+.3f} "
                f"(p = {d.p_delta_tau:.3f}; around the null's centre p = "
                f"{d.p_delta_tau_centred:.3f}")
        if d.rule == "controlled":
            text += (f"; rotation null p = {d.p_delta_tau_rotation:.3f}; the sign holds with either "
                     "label made rare, with either judge recalibrated and over the alpha grid")
        text += ")."
    elif d.direction == "⊥":
        text = (f"CAGE finds no effect between {d.m1} and {d.m2} ({variant}): neither GATE is "
                f"outside its {d.null} null (p = {d.p_gate_12:.3f} and {d.p_gate_21:.3f}).")
    else:
        text = (f"CAGE finds {d.m1} and {d.m2} associated but no direction ({variant}): "
                + "; ".join(_reason_clause(d, r) for r in reasons) + ".")
    if d.rule == "controlled" and d.direction_paper in ("->", "<-"):
        a, b = (d.m1, d.m2) if d.direction_paper == "->" else (d.m2, d.m1)
        text += f" The paper's rule would read {a} -> {b}."
    elif d.rule == "paper" and d.direction_controlled != d.direction:
        why = "; ".join(_reason_clause(d, r) for r in d.reason_controlled.split("+") if r)
        text += f" The controlled rule says {d.direction_controlled}" + (f": {why}." if why else ".")
    return text


def sentence_from_row(row: Mapping[str, str]) -> str:
    """:func:`sentence` for one ``directions.csv`` row (a ``csv.DictReader`` dict)."""
    return sentence(DirectionRow.from_csv(row))
