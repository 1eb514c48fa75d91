"""The analysis outputs: arbitrary worker ids and DAG names never change a table's structure or
inject a formula, HTML or a LaTeX command (hypothesis); files follow the umask; bad input is one
error line."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import re
import stat

import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results, write_turkle
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.quality import RULES
from analysis.report import AnalysisOptions, analyze_file
from analysis.tables import TABLE2_COLUMNS, render_outputs
from cage_eval.cli import cli

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    run, items = make_analysis_run(tmp_path_factory.mktemp("a") / "run", pairs_per_cell=4)
    path = write_results(run / "results.csv", simulate(items, p_cause=0.7, seed=1),
                         "5e1f0c2a9b7d4e33")
    return analyze_file(path, options=AnalysisOptions(n_boot=0, gee=False))


# --------------------------------------------------------------------------- bad input, modes


def test_a_negative_seed_is_an_error_not_a_traceback(result):
    res = CliRunner().invoke(cli, ["analyze", str(result.source), "--seed", "-5"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    assert "Error: Invalid value for '--seed': -5 is not in the range x>=0." in res.output
    assert "Traceback" not in res.output


def test_a_recursive_answer_is_one_error_line(tmp_path):
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=2)
    path = write_turkle(run / "results.csv", simulate(items, seed=2))
    text = path.read_text()
    bomb = "[" + "1+" * 100_000 + "1]"
    text = text.replace('"[\'top\']"', f'"{bomb}"', 1).replace('"[\'bottom\']"', f'"{bomb}"', 1)
    path.write_text(text)
    res = CliRunner().invoke(cli, ["analyze", str(path), "--n-boot", "0"])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.exception
    line = res.output.strip()
    assert re.fullmatch(rf"Error: {re.escape(str(path))}: line \d+: column Answer.choice: "
                        r"unreadable value '\[(1\+){19}1'\.\.\. \(200,003 characters\); expected "
                        r"top or bottom", line), line
    assert not (run / "analysis").exists()


def test_outputs_follow_the_umask_like_every_other_file(result, tmp_path):
    res = CliRunner().invoke(cli, ["analyze", str(result.source), "--out", str(tmp_path / "out"),
                                   "--n-boot", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    mask = os.umask(0)
    os.umask(mask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == dict.fromkeys(["table2.csv", "table2.md", "table2.tex", "workers.csv",
                                   "analysis.json"], 0o666 & ~mask)


# --------------------------------------------------------------------------- escaping

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
FIXED = ["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "a|b", "<b>x</b>",
         "line\nbreak", "a\r\nb", "{\\evil}", "^^5c^^5c", "~x~", "100% & $x$", "#_", "a->b",
         "\\input{/etc/passwd}", "`code`", "*bold*", "[link](http://x)"]


def _with_names(result, dags: list[str], workers: list[str]):
    """``result`` with its DAG names and worker ids/names replaced."""
    mapping = dict(zip(dict.fromkeys(result.table["dag"]), dags, strict=False))
    table = result.table.assign(dag=result.table["dag"].map(mapping))
    ids = list(dict.fromkeys(result.workers["worker_id"]))
    wmap = dict(zip(ids, (workers * len(ids))[:len(ids)], strict=True))
    frame = result.workers.assign(worker_id=[wmap[w] + f"#{i}" for i, w in
                                             enumerate(result.workers["worker_id"])],
                                  worker_name=result.workers["worker_id"].map(wmap))
    return dataclasses.replace(result, table=table, workers=frame)


def _check_csv(text: str, frame, text_columns) -> None:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == len(frame) + 1 and rows[0] == list(frame.columns)
    assert all(len(r) == len(frame.columns) for r in rows)
    for column in text_columns:
        k = list(frame.columns).index(column)
        for row, value in zip(rows[1:], frame[column], strict=True):
            cell = row[k]
            assert not cell.startswith(FORMULA_START)
            assert cell == value or (value.startswith(FORMULA_START) and cell == "'" + value)


def _md_cells(line: str) -> list[str]:
    """The cells of one Markdown table row, unescaped (``\\x`` -> ``x``, ``<br>`` -> newline)."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells, cell, i, body = [], [], 0, line[2:-2]
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            cell.append(body[i + 1])
            i += 2
            continue
        assert ch != "<" or body.startswith("<br>", i), line   # no raw HTML but our <br>
        if body.startswith("<br>", i):
            cell.append("\n")
            i += 4
            continue
        if ch == "|":
            cells.append("".join(cell)[:-1])  # drop the " " before the separator
            cell, i = [], i + 2               # and the one after it
            continue
        cell.append(ch)
        i += 1
    return [*cells, "".join(cell)]


def _md_expected(value: str) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "\ufffd", value)


_TEX_BACK = {r"\textbackslash{}": "\\", r"\textasciicircum{}": "^", r"\textasciitilde{}": "~",
             r"\textless{}": "<", r"\textgreater{}": ">", r"\textbar{}": "|", r"$\rightarrow$": "->"}


def _tex_cells(line: str) -> list[str]:
    """The cells of one LaTeX tabular row, checking that TeX would see exactly these cells."""
    assert line.endswith(" \\\\"), line
    body, cells, cell, depth, i = line[:-3], [], [], 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            m = re.match(r"\\([A-Za-z]+)(\{\})?|\\.", body[i:])
            cell.append(m.group(0))
            i += len(m.group(0))
            continue
        assert ch not in "%#^~_" or body[i - 1:i + 3] == "$^{*" or ch == "^" and \
            body[i - 1:i + 1] == "$^", line  # no comment, parameter, super/subscript, tie
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, line
        if ch == "&":
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
        i += 1
    assert depth == 0, line
    return [*cells, "".join(cell).strip()]


def _tex_unescape(cell: str) -> str:
    for escaped, plain in _TEX_BACK.items():
        cell = cell.replace(escaped, "\0" + plain + "\0")
    cell = re.sub(r"\\([{}$&#%_])", r"\1", cell)
    return cell.replace("\0", "")


def _tex_expected(value: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]", " ", value).strip()


def _check_markdown(text: str, dags: list[str], n_settings: int) -> None:
    # Markdown ends lines at \n (and \r) only: str.splitlines would also split at U+2028 etc.
    tables = [block.split("\n") for block in text.split("\n\n") if block.startswith("| ")]
    assert "\r" not in text
    assert len(tables) == 4
    grid, by_rule, per_cell, robust = tables
    assert len(by_rule) == 2 + len(RULES) + 1          # every rule, then the analysed total
    assert all(len(_md_cells(row)) == 4 for row in by_rule if not row.startswith("|---"))
    assert len(grid) == 2 + len(dags)
    assert [_md_cells(row)[0] for row in grid[2:]] == [_md_expected(d) for d in dags]
    assert all(len(_md_cells(row)) == 1 + n_settings for row in grid if not row.startswith("|---"))
    for block, width in ((per_cell, 9), (robust, 12)):
        assert len(block) == 2 + len(dags) * n_settings
        assert all(len(_md_cells(row)) == width for row in block if not row.startswith("|---"))


def _check_latex(text: str, dags: list[str], n_settings: int) -> None:
    blocks = re.findall(r"\\midrule\n(.*?)\n\\bottomrule", text, re.S)
    assert len(blocks) == 3
    grid, detail, by_rule = (b.split("\n") for b in blocks)
    rule_rows = [row for row in by_rule if row != "\\midrule"]
    assert len(rule_rows) == len(RULES) + 1 and all(len(_tex_cells(r)) == 4 for r in rule_rows)
    assert [_tex_unescape(_tex_cells(row)[0]) for row in grid] == [_tex_expected(d) for d in dags]
    assert all(len(_tex_cells(row)) == 1 + n_settings for row in grid)
    assert len(detail) == len(dags) * n_settings
    assert all(len(_tex_cells(row)) == 9 for row in detail)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dags=st.lists(st.one_of(names, st.sampled_from(FIXED)), min_size=2, max_size=2,
                     unique=True),
       workers=st.lists(st.one_of(names, st.sampled_from(FIXED)), min_size=1, max_size=6))
def test_any_names_keep_every_table_intact(result, dags, workers):
    changed = _with_names(result, dags, workers)
    texts = render_outputs(changed)
    _check_csv(texts["table2.csv"], changed.table[list(TABLE2_COLUMNS)], ["dag", "setting"])
    _check_csv(texts["workers.csv"], changed.workers, ["worker_id", "worker_name"])
    n_settings = changed.table["setting"].nunique()
    _check_markdown(texts["table2.md"], dags, n_settings)
    _check_latex(texts["table2.tex"], dags, n_settings)


def test_the_known_attacks_are_neutralised(result):
    changed = _with_names(result, ["=cmd|' /C calc'!A0", "<img src=x onerror=alert(1)>"],
                          ["@SUM(1+1)*cmd|' /C calc'!A0", "^^5cinput{/etc/passwd}"])
    texts = render_outputs(changed)
    assert "\n'=cmd|" in texts["table2.csv"] and "\n=cmd" not in texts["table2.csv"]
    assert "'@SUM(1+1)" in texts["workers.csv"]
    assert not re.search(r"(?<!\\)<img", texts["table2.md"])
    assert "\\<img src=x onerror=alert(1)\\>" in texts["table2.md"]
    assert "^^" not in texts["table2.tex"].replace("$^{*}$", "")
    assert "\\textless{}img src=x onerror=alert(1)\\textgreater{}" in texts["table2.tex"]
