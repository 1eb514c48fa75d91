"""Every number of the report's direction tables, read back from the HTML, is the run's own: the
value in ``directions.csv`` (or ``classifiers.csv``) for the right space (latent or observation)
and the right p-value, under the column's name.

The page marks each cell with the CSV column it shows (``data-col``) and each row with its pair,
variant and space; this test reads the HTML with the standard library's parser, checks that each
column's header is the name this p-value or number has everywhere, and compares the cell with the
CSV value at the precision shown.
"""

from __future__ import annotations

import csv
import math
import re
from html.parser import HTMLParser

import pytest

from cage_eval import runs

#: The header each CSV column is shown under: one name per p-value, everywhere.
HEADERS = {
    "delta_tau": "Δτ", "p_delta_tau": "p(Δτ ≠ 0)", "p_delta_tau_centred": "p(Δτ off-centre)",
    "p_delta_tau_rotation": "p(Δτ rotation)", "p_gate_12": "p(GATE m1→m2)",
    "p_gate_21": "p(GATE m2→m1)", "gate_12": "GATE m1→m2", "gate_21": "GATE m2→m1",
    "gate_12_geometric": "geometric GATE m1→m2", "gate_21_geometric": "geometric GATE m2→m1",
    "delta_tau_geometric": "geometric Δτ", "delta_tau_m1_rare": "Δτ, m1 rare",
    "delta_tau_m2_rare": "Δτ, m2 rare", "delta_tau_balanced": "Δτ, both balanced (50 %)",
    "mmd": "MMD² m1", "p_mmd": "p(MMD) m1", "mmd_2": "MMD² m2", "p_mmd_2": "p(MMD) m2",
    "cos_normals": "cos(h1, h2)", "norm_w1": "|w1|", "norm_w2": "|w2|", "offset_1": "offset 1",
    "offset_2": "offset 2",
}
#: Accuracy columns: their header depends on the table (outcome classifiers vs latent ones).
ACC_HEADERS = {"outcome-classifiers": ("held-out accuracy, m1", "held-out accuracy, m2"),
               "hyperplanes": ("latent accuracy 1", "latent accuracy 2")}


class _Tables(HTMLParser):
    """Every ``<table id=...>``: its header texts and rows of ``(tr attrs, [(td attrs, text)])``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, dict] = {}
        self._table: dict | None = None
        self._cell: list | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "id" in a:
            self._table = self.tables[a["id"]] = {"headers": [], "rows": []}
        elif self._table is None:
            return
        elif tag == "thead":
            self._in_head = True
        elif tag == "tr" and not self._in_head:
            self._table["rows"].append((a, []))
        elif tag in ("td", "th"):
            self._cell = [a, ""]

    def handle_endtag(self, tag):
        if self._table is None:
            return
        if tag == "table":
            self._table = None
        elif tag == "thead":
            self._in_head = False
        elif tag in ("td", "th") and self._cell is not None:
            if self._in_head:
                self._table["headers"].append(self._cell[1].strip())
            elif tag == "td" or "data-col" in self._cell[0]:
                self._table["rows"][-1][1].append((self._cell[0], self._cell[1].strip()))
            else:  # a row header: counts for the column positions
                self._table["rows"][-1][1].append(({}, self._cell[1].strip()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def _close(text: str, value: float) -> bool:
    """``text`` shows ``value`` at its own precision (``–`` for a missing one)."""
    if text == "–":
        return value is None or math.isnan(value)
    shown = float(text.replace("−", "-"))
    if "e" in text:
        return math.isclose(shown, value, rel_tol=0.051)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(shown - value) <= 0.5 * 10 ** -decimals + 1e-12


def _csv(path):
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def page(tiny_digits_run):
    parser = _Tables()
    parser.feed((tiny_digits_run / runs.REPORT).read_text(encoding="utf-8"))
    directions = {(f"{r['m1']}/{r['m2']}", r["outcome"]): r
                  for r in _csv(tiny_digits_run / runs.DIRECTIONS)}
    accuracy = {(r["attribute"], r["space"]): float(r["accuracy"])
                for r in _csv(tiny_digits_run / runs.CLASSIFIERS)}
    return parser.tables, directions, accuracy


def test_every_direction_number_is_the_csv_value_for_its_row_and_column(page):
    tables, directions, accuracy = page
    checked = set()
    for table_id, table in tables.items():
        headers = table["headers"]
        for tr, cells in table["rows"]:
            pair, outcome = tr.get("data-pair"), tr.get("data-outcome")
            for i, (attrs, text) in enumerate(cells):
                col = attrs.get("data-col")
                if col is None:
                    continue
                header = headers[len(headers) - (len(cells) - i)]
                m1, m2 = pair.split("/")
                if col in ("acc_1", "acc_2"):
                    k = int(col[-1]) - 1
                    assert header == ACC_HEADERS[table_id][k], (table_id, col, header)
                    space = tr["data-space"]
                    value = accuracy[((m1, m2)[k], space)]
                    # eq. 9's rows show the observation classifier, never the latent one.
                    assert space == ("latent" if outcome in (None, "latent") else "observation")
                else:
                    assert header == HEADERS[col], (table_id, col, header)
                    row = directions[(pair, outcome)] if outcome else next(
                        r for (p, _), r in directions.items() if p == pair)
                    value = float(row[col])
                    if col == "p_delta_tau_rotation" and outcome == "latent":
                        assert text == "–"  # eq. 8's reason is its geometry, not this null
                        continue
                assert _close(text, value), (table_id, pair, outcome, col, text, value)
                checked.add((table_id, col, outcome))
    # Both variants, every table, and the observation accuracies were read back.
    assert {t for t, _, _ in checked} == {"calls", "effects", "controls", "balanced",
                                          "outcome-classifiers", "latent-diagnostics",
                                          "hyperplanes"}
    assert ("outcome-classifiers", "acc_1", "observation") in checked
    assert ("calls", "p_delta_tau_rotation", "observation") in checked


def test_the_latent_numbers_are_shown_once_per_pair(page):
    tables, directions, _ = page
    pairs = {p for p, _ in directions}
    for table_id in ("latent-diagnostics", "hyperplanes"):
        assert sorted(tr["data-pair"] for tr, _ in tables[table_id]["rows"]) == sorted(pairs)


def test_the_sentences_name_their_p_values_as_the_tables_do(page, tiny_digits_run):
    text = (tiny_digits_run / runs.REPORT).read_text(encoding="utf-8")
    block = text.split('<ul class="sentences">', 1)[1].split("</ul>", 1)[0]
    words = re.findall(r"<li><strong>[^<]*</strong> (CAGE finds[^<]*)</li>", block)
    assert words
    _, directions, _ = page
    names = {"p(Δτ ≠ 0)": "p_delta_tau", "p(Δτ off-centre)": "p_delta_tau_centred",
             "p(Δτ rotation)": "p_delta_tau_rotation"}
    rows = list(directions.values())
    seen = 0
    for sentence, row in zip(words, rows, strict=True):
        for a, b, shown in re.findall(r"p\(GATE (\w+)→(\w+)\) = ([0-9.]+)", sentence):
            col = "p_gate_12" if (a, b) == (row["m1"], row["m2"]) else "p_gate_21"
            assert (b, a) == (row["m1"], row["m2"]) or col == "p_gate_12"
            assert _close(shown, float(row[col])), (sentence, col)
            seen += 1
        for name, col in names.items():
            for shown in re.findall(re.escape(name) + r" = ([0-9.]+)", sentence.replace(
                    "&#34;", '"')):
                assert _close(shown, float(row[col])), (sentence, col)
                seen += 1
        assert "p = " not in sentence  # no p-value without its name
    assert seen >= len(rows)
