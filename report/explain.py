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

from cage_eval import runs

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


#: The name of every p-value of a direction (:data:`cage_eval.runs.P_VALUE_NAMES`): the
#: report's column headers, the sentences, the plots, the ``generate`` summary and the docs all
#: use these words.
P_NAMES = runs.P_VALUE_NAMES
p_name = runs.p_value_name

#: What each p-value tests (``{null}``: the decision null's name).
P_TESTS = {
    "p_gate_12": "GATE(m1→m2) against the {null} null: does intervening on m1 move m2 at all?",
    "p_gate_21": "GATE(m2→m1) against the {null} null: does intervening on m2 move m1 at all?",
    "p_delta_tau": ("|Δτ| against the {null} null's |Δτ|, measured from 0: the paper's test, and "
                    "the one its rule reads"),
    "p_delta_tau_centred": ("Δτ against the {null} null measured from the null's own median (that "
                            "null is not centred at 0): the controlled rule's test"),
    "p_delta_tau_rotation": ("Δτ against the rotation null (the same pair geometry pointed "
                             "elsewhere in the latent space), from its median; eq. 9 only"),
    "p_mmd": ("MMD² between conditioning on and intervening on one attribute, against label "
              "permutations (latent space): do seeing and doing differ?"),
}

#: Every reason a call is not an arrow, in words (the report's legend; ``rotation-null`` was
#: ``geometry-only`` on eq. 9 rows in runs written before it had its own name).
REASON_WORDS = {
    "no-effect": "neither GATE is outside its null",
    "geometry-only": ("eq. 8: Δτ is what the two hyperplanes' offsets and norms alone predict, so "
                      "it cannot tell a cause from an effect"),
    "rotation-null": ("eq. 9: Δτ is inside the rotation null (the same pair geometry pointed "
                      "elsewhere does as much)"),
    "not-significant": "Δτ is inside its null measured from the null's centre",
    "balance-driven": "the sign of Δτ follows which label is made rare",
    "alpha-unstable": "the sign of Δτ changes over the α grid",
}


def reason_name(reason: str, outcome: str) -> str:
    """``reason`` as this version names it: ``geometry-only`` on an eq. 9 row (written before
    ``rotation-null`` had its own name) reads ``rotation-null``."""
    if reason == "geometry-only" and outcome != "latent":
        return "rotation-null"
    return reason


def reasons_of(text: str, outcome: str) -> list[str]:
    """The reasons of a ``reason`` / ``reason_controlled`` cell, in this version's names."""
    return [reason_name(r, outcome) for r in (text or "").split("+") if r]


def _reason_clause(d: DirectionRow, reason: str, rule: str) -> str:
    """Why ``rule`` did not draw an arrow, for one of its reasons (the paper's rule tests Δτ
    from 0, the controlled rule from its null's centre)."""
    reason = reason_name(reason, d.outcome)
    if reason == "not-significant" and rule == "paper":
        return (f"Δτ ({d.delta_tau:+.3f}) is inside its {d.null} null measured from 0 "
                f"({p_name('p_delta_tau')} = {d.p_delta_tau:.3f})")
    if reason == "geometry-only":
        return (f"eq. 8's Δτ ({d.delta_tau:+.3f}) is what the two hyperplanes' offsets and "
                f"norms alone predict ({d.delta_tau_geometric:+.3f}), so it cannot tell a cause "
                "from an effect")
    if reason == "rotation-null":
        return (f"Δτ is inside the rotation null ({p_name('p_delta_tau_rotation')} = "
                f"{d.p_delta_tau_rotation:.3f}): the same pair geometry pointed elsewhere in the "
                "latent space does as much")
    if reason == "not-significant":
        return (f"Δτ ({d.delta_tau:+.3f}) is inside its {d.null} null measured from the null's "
                f"centre ({p_name('p_delta_tau_centred')} = {d.p_delta_tau_centred:.3f}; "
                f"measured from 0, {p_name('p_delta_tau')} = {d.p_delta_tau:.3f})")
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
        return "its sign changes over the α grid"
    if reason == "falsified":
        return ("every other control passed, but on this generator the same arrow passed them with "
                "the data's mechanism reversed or removed (the experiment's [cage] falsified), so "
                "an arrow here does not follow the mechanism")
    return reason


def sentence(d: Any) -> str:
    """One paragraph on ``d`` (a :class:`cage.run.result.PairDirection` or a :class:`DirectionRow`):
    the call of its rule, why, and the other rule's call. Every p-value is named as in
    :data:`P_NAMES`."""
    if not isinstance(d, DirectionRow):
        d = DirectionRow.from_direction(d)
    variant = VARIANT_WORDS.get(d.outcome, d.outcome)
    reasons = reasons_of(d.reason, d.outcome)
    if d.direction in ("->", "<-"):
        text = (f"CAGE finds {d.cause} → {d.effect} ({variant}): Δτ = {d.delta_tau:+.3f} "
                f"({p_name('p_delta_tau')} = {d.p_delta_tau:.3f}; "
                f"{p_name('p_delta_tau_centred')} = {d.p_delta_tau_centred:.3f}")
        if d.rule == "controlled":
            text += (f"; {p_name('p_delta_tau_rotation')} = {d.p_delta_tau_rotation:.3f}; the "
                     "sign holds with either label made rare, with either judge recalibrated and "
                     "over the α grid")
        text += ")."
    elif d.direction == "⊥":
        text = (f"CAGE finds no effect between {d.m1} and {d.m2} ({variant}): neither GATE is "
                f"outside its {d.null} null ({p_name('p_gate_12', d.m1, d.m2)} = "
                f"{d.p_gate_12:.3f}, {p_name('p_gate_21', d.m1, d.m2)} = {d.p_gate_21:.3f}).")
    else:
        text = (f"CAGE finds {d.m1} and {d.m2} associated but no direction ({variant}): "
                + "; ".join(_reason_clause(d, r, d.rule) for r in reasons) + ".")
    if d.rule == "controlled" and d.direction_paper in ("->", "<-"):
        a, b = (d.m1, d.m2) if d.direction_paper == "->" else (d.m2, d.m1)
        text += f" The paper's rule would read {a} → {b}."
    elif d.rule == "paper" and d.direction_controlled != d.direction:
        why = "; ".join(_reason_clause(d, r, "controlled")
                        for r in reasons_of(d.reason_controlled, d.outcome))
        text += f" The controlled rule says {d.direction_controlled}" + (f": {why}." if why else ".")
    return text


def sentence_from_row(row: Mapping[str, str]) -> str:
    """:func:`sentence` for one ``directions.csv`` row (a ``csv.DictReader`` dict)."""
    return sentence(DirectionRow.from_csv(row))
