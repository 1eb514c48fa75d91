"""How much of a run the answers cover: per DAG and setting, pairs and assignments answered.

A results file can be analysed while HITs are still live; the tables then rest on part of the
run. :func:`measure_coverage` counts, per (DAG, setting) cell, the pairs with at least one
answer out of the run's pairs, and the pair assignments answered out of those planned (pair items
x assignments per HIT). Counts are of the rows read from the file, before any exclusion.
Assignments per HIT come from the publication recorded in the run (the CLI passes a reader of the
ledgers) or else from the file's ``MaxAssignments`` column.

:func:`no_answers_message` is the one-line reason given for a file nobody has answered yet.
Nothing here prints; :mod:`analysis.tables` renders :func:`coverage_lines`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.stats import table_order


@dataclass(frozen=True)
class CellCoverage:
    """One (DAG, setting) cell: answered out of planned.

    Attributes
    ----------
    pairs_answered, pairs_in_run : pairs with at least one answer; pairs of the cell in the run.
    assignments_answered : pair assignments (rows) answered in the file.
    assignments_planned : ``pairs_in_run`` x assignments per HIT; ``None`` when unknown.
    """

    dag: str
    setting: str
    pairs_answered: int
    pairs_in_run: int
    assignments_answered: int
    assignments_planned: int | None

    @property
    def complete(self) -> bool:
        """Every pair answered, and every planned assignment when the plan is known."""
        return self.pairs_answered >= self.pairs_in_run and (
            self.assignments_planned is None
            or self.assignments_answered >= self.assignments_planned)


@dataclass(frozen=True)
class Coverage:
    """The answers' coverage of the run (see the module docstring).

    Attributes
    ----------
    cells : one :class:`CellCoverage` per cell of the run, in table order.
    per_item : assignments planned per HIT, ``None`` when unknown.
    per_item_source : where ``per_item`` came from (``"ledger"``, ``"MaxAssignments"``, ``""``).
    """

    cells: tuple[CellCoverage, ...]
    per_item: int | None
    per_item_source: str

    def _total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.cells)

    @property
    def pairs_answered(self) -> int:
        return self._total("pairs_answered")

    @property
    def pairs_in_run(self) -> int:
        return self._total("pairs_in_run")

    @property
    def assignments_answered(self) -> int:
        return self._total("assignments_answered")

    @property
    def assignments_planned(self) -> int | None:
        return None if self.per_item is None else self._total("assignments_planned")

    @property
    def complete(self) -> bool:
        return all(c.complete for c in self.cells)

    def warnings(self) -> list[str]:
        """``WARNING: ...`` lines when the answers cover only part of the run."""
        if self.complete:
            return []
        short = [f"{c.dag}/{c.setting}" for c in self.cells if not c.complete]
        planned = ("" if self.per_item is None else
                   f" ({self.assignments_answered} of {self.assignments_planned} planned "
                   "assignments)")
        return [f"WARNING: answers cover {self.pairs_answered} of {self.pairs_in_run} pairs"
                f"{planned}; {' and '.join(short) if len(short) <= 3 else f'{len(short)} cells'}"
                " are incomplete, so the tables rest on part of the run; collect again when "
                "the HITs are done"]

    def to_dict(self) -> dict:
        return {"per_item": self.per_item, "per_item_source": self.per_item_source,
                "pairs_answered": self.pairs_answered, "pairs_in_run": self.pairs_in_run,
                "assignments_answered": self.assignments_answered,
                "assignments_planned": self.assignments_planned, "complete": self.complete,
                "cells": [asdict(c) for c in self.cells]}


def planned_per_item_from_file(raw: pd.DataFrame) -> int | None:
    """The largest ``MaxAssignments`` in the file (``None`` when the column is absent or blank)."""
    values = pd.to_numeric(raw["max_assignments"], errors="coerce").to_numpy(dtype=float)
    values = values[np.isfinite(values) & (values >= 1)]
    return int(values.max()) if len(values) else None


def measure_coverage(judgements: pd.DataFrame, pairs_in_run: dict[tuple[str, str], int],
                     per_item: int | None, per_item_source: str = "") -> Coverage | None:
    """Coverage of the run by the joined judgements (``analysis.join.JUDGEMENT_COLUMNS``).

    ``pairs_in_run`` maps (dag, setting) to the run's pairs (``JoinReport.pairs_in_run``); when
    it is empty (a tidy file analysed without its run) coverage is unknown and ``None`` is
    returned.
    """
    if not pairs_in_run:
        return None
    pairs = judgements[judgements["kind"] == "pair"]
    answered = pairs.groupby(["dag", "setting"]).agg(
        rows=("pair_id", "size"), pairs=("pair_id", "nunique"))
    cells = []
    for dag, setting in table_order(list(pairs_in_run)):
        n_pairs = pairs_in_run[(dag, setting)]
        rows, got = (answered.loc[(dag, setting)].tolist() if (dag, setting) in answered.index
                     else (0, 0))
        cells.append(CellCoverage(
            dag=dag, setting=setting, pairs_answered=int(got), pairs_in_run=n_pairs,
            assignments_answered=int(rows),
            assignments_planned=None if per_item is None else n_pairs * per_item))
    return Coverage(tuple(cells), per_item, per_item_source if per_item is not None else "")


def coverage_lines(coverage: Coverage | None) -> list[str]:
    """The coverage as text: one line when complete, else a per-cell table and a WARNING."""
    if coverage is None:
        return []
    planned = coverage.assignments_planned
    if coverage.complete:
        extra = "" if planned is None else (
            f" ({coverage.assignments_answered} of {planned} planned assignments)")
        return [f"Coverage: all {coverage.pairs_in_run} pairs answered{extra}."]
    source = {"ledger": "the publication's ledger",
              "MaxAssignments": "the file's MaxAssignments"}.get(coverage.per_item_source, "")
    how = ("assignments per HIT unknown" if coverage.per_item is None
           else f"{coverage.per_item} assignments per HIT, from {source}")
    rows = [[c.setting, c.dag, f"{c.pairs_answered}/{c.pairs_in_run}",
             f"{c.assignments_answered}/{'-' if c.assignments_planned is None else c.assignments_planned}"]
            for c in coverage.cells]
    head = ["setting", "DAG", "pairs", "assignments"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= 2 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [f"Coverage (answered in the file / in the run; {how}):",
            line(head), line(["-" * w for w in widths]), *map(line, rows), *coverage.warnings()]


def no_answers_message(path: Path, n_items: int | None, per_item: int | None) -> str:
    """The error for a results file with a header and no answers."""
    then = "collect again once workers have submitted"
    if n_items is None:
        return f"{path}: 0 assignments answered yet (the file has a header and no rows); {then}"
    if per_item is None:
        return f"{path}: 0 of {n_items} HITs answered yet (the file has a header and no rows); {then}"
    return (f"{path}: 0 of {n_items * per_item} assignments answered yet ({n_items} HITs x "
            f"{per_item} assignments); {then}")
