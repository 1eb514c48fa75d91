"""``cage-eval analyze`` on incomplete designs: a DAG judged in one setting only, and a cell
emptied by the attention-check exclusions. Table 2 keeps only the cells that exist (an emptied
cell shows ``0/0``), and each setting's correction family counts the cells it tested."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID
from scipy import stats
from statsmodels.stats.multitest import multipletests

from cage_eval import runs
from cage_eval.cli import cli


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def check_per_setting(table: pd.DataFrame, method: str, alpha: float = 0.05) -> None:
    """p_adjusted, stars and family sizes equal ``multipletests`` run on each setting alone."""
    tested = table[table["n"] > 0]
    for _, rows in tested.groupby("setting"):
        p = [stats.binomtest(int(k), int(n)).pvalue for k, n in zip(rows["k"], rows["n"],
                                                                     strict=True)]
        reject, corrected, _, _ = multipletests(p, alpha=alpha, method=method)
        np.testing.assert_allclose(rows["p_adjusted"], corrected, rtol=1e-8)
        assert rows["significant"].tolist() == reject.tolist()
        assert set(rows["family_size"]) == {len(rows)}
        if method == "bonferroni":
            np.testing.assert_allclose(rows["p_adjusted"], np.minimum(1, len(rows) * np.array(p)),
                                       rtol=1e-8)


def grid_rows(output: str) -> dict[str, list[str]]:
    """The terminal's DAG x setting grid: ``{dag: [same_source, same_destination]}``."""
    lines = output.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("DAG "))
    assert lines[start].split() == ["DAG", "same_source", "same_destination"]
    rows = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        dag, *cells = line.split()
        rows[dag] = cells
    return rows


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_dag_in_one_setting_only_gives_table2_not_a_traceback(tmp_path, method):
    # a->b in both settings; c->d and e->f in same_source only (the example).
    counts = {("a->b", "same_source"): (26, 36), ("c->d", "same_source"): (20, 36),
              ("e->f", "same_source"): (29, 36), ("a->b", "same_destination"): (25, 36)}
    rng = np.random.default_rng(0)
    rows = []
    for (dag, setting), (k, n) in counts.items():
        prefs = rng.permutation(["cause"] * k + ["effect"] * (n - k))
        for i, pref in enumerate(prefs):
            rows.append({"dag": dag, "setting": setting, "pair_id": f"{dag}/{setting}/{i // 3}",
                         "worker_id": f"w{i % 3}", "preferred": pref})
    path = tmp_path / "tidy.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "out"
    res = invoke("analyze", path, "--correction", method, "--out", out, "--n-boot", 100)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    table = pd.read_csv(out / "table2.csv")
    assert list(zip(table["setting"], table["dag"], strict=True)) == [
        ("same_source", "a->b"), ("same_source", "c->d"), ("same_source", "e->f"),
        ("same_destination", "a->b")]
    assert table.set_index(["dag", "setting"])[["k", "n"]].to_dict("index") == {
        c: {"k": k, "n": n} for c, (k, n) in counts.items()}
    assert table["family_size"].tolist() == [3, 3, 3, 1]
    check_per_setting(table, method)
    # The grid shows an absent cell as "-".
    grid = grid_rows(res.output)
    assert grid["c->d"][1] == "-" and grid["e->f"][1] == "-"
    assert grid["a->b"][1].startswith("25/36")
    data = json.loads((out / "analysis.json").read_text())
    assert len(data["cells"]) == 4


def _empty_one_cell_by_attention(items, judgements, cell):
    """Give every judgement of ``cell`` to three workers who then fail every attention item."""
    out, bad = [], [f"A9BAD{j}WRK" for j in range(3)]
    for judgement in judgements:
        item = judgement.item
        if item.kind == "pair" and (item.dag, item.setting) == cell:
            judgement = dataclasses.replace(judgement,
                                            worker=bad[int(judgement.assignment_id[-1])])
        out.append(judgement)
    attention = [(h, it) for h, it in enumerate(items) if it.kind == "attention"]
    assert attention
    for h, item in attention:
        wrong = "bottom" if item.expected == "top" else "top"
        template = next(j for j in judgements if j.item is item)
        out += [dataclasses.replace(template, worker=w, worker_num=90 + k, choice=wrong,
                                    assignment_id=f"3BAD{h:05d}{k}") for k, w in enumerate(bad)]
    return out


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_cell_emptied_by_attention_exclusions_shows_n_zero(tmp_path, method):
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=12, attention_rate=0.2)
    planted = {("thick->bright", "same_source"): 0.8, ("thick->bright", "same_destination"): 0.3,
               ("slant->thick", "same_source"): 0.75, ("slant->thick", "same_destination"): 0.5}
    judgements = simulate(items, p_cause=planted, n_workers=9, seed=3)
    emptied = ("slant->thick", "same_destination")
    results = write_results(run / runs.RESULTS,
                            _empty_one_cell_by_attention(items, judgements, emptied),
                            DEFAULT_RUN_ID)
    out = tmp_path / "out"
    res = invoke("analyze", results, "--correction", method, "--out", out, "--n-boot", 100)
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    assert "3 excluded" in res.output
    table = pd.read_csv(out / "table2.csv")
    assert len(table) == 4
    cell = table.set_index(["dag", "setting"]).loc[emptied]
    assert (cell.k, cell.n, cell.family_size) == (0, 0, 0)
    assert math.isnan(cell.p_value) and math.isnan(cell.p_adjusted) and not cell.significant
    assert table.loc[table["n"] > 0, "n"].tolist() == [36, 36, 36]
    sizes = table.set_index(["dag", "setting"])["family_size"].to_dict()
    assert sizes[("thick->bright", "same_destination")] == 1
    assert sizes[("thick->bright", "same_source")] == sizes[("slant->thick", "same_source")] == 2
    check_per_setting(table, method)
    grid = grid_rows(res.output)
    assert grid["slant->thick"][1] == "0/0"
    data = json.loads((out / "analysis.json").read_text())
    empty = next(c for c in data["cells"] if (c["dag"], c["setting"]) == emptied)
    assert empty["n"] == 0 and empty["p_value"] is None and empty["family_size"] == 0
