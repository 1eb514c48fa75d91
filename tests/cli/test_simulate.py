"""``cage-eval simulate``: planted preferences in, the same preferences out of ``analyze``."""

from __future__ import annotations

import json
import math
import shutil

import pandas as pd
import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID, make_run_dir

from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import ConfigError
from crowds.simulated import CrowdModel, parse_preferences, simulate_results

CELLS = [("slant->thick", "same_destination"), ("slant->thick", "same_source"),
         ("thick->bright", "same_destination"), ("thick->bright", "same_source")]
PLANTED = ["thick->bright/same_source=0.85", "thick->bright=0.62", "slant->thick=0.5"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run, _ = make_analysis_run(tmp_path_factory.mktemp("sim") / "run", pairs_per_cell=60,
                               attention_rate=0.2)
    return run


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _copy(run, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(run, work)
    return work


def test_parse_preferences_most_specific_wins_in_any_order():
    got = parse_preferences(["thick->bright/same_source=0.9", "0.3", "thick->bright=0.7",
                             "same_destination=0.6"], CELLS)
    assert got == {("slant->thick", "same_destination"): 0.6,
                   ("slant->thick", "same_source"): 0.3,
                   ("thick->bright", "same_destination"): 0.7,
                   ("thick->bright", "same_source"): 0.9}
    assert set(parse_preferences([], CELLS).values()) == {0.5}
    for bad, msg in [("thick->brite=0.7", "DAG or setting 'thick->brite' is not in the run"),
                     ("thick->bright/same=0.7", "setting 'same' is not in the run"),
                     ("1.5", "'1.5' is not a probability"), ("thick->bright=", "not a probab")]:
        with pytest.raises(ConfigError, match=msg):
            parse_preferences([bad], CELLS)


def test_simulate_then_analyze_recovers_the_planted_preferences(run, tmp_path):
    work = _copy(run, tmp_path)
    res = _invoke("simulate", work, *[a for p in PLANTED for a in ("--p-cause", p)],
                  "--seed", 7)
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"SIMULATED answers (no people): {work / runs.RESULTS}: ")
    res = _invoke("analyze", work / runs.RESULTS, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(work / "analysis" / "table2.csv").set_index(["dag", "setting"])
    planted = parse_preferences(PLANTED, CELLS)
    for cell, p in planted.items():
        row = table.loc[cell]
        assert row.n == 180                                   # 60 pairs x 3 annotators
        sd = math.sqrt(row.n * p * (1 - p))
        assert abs(row.k - row.n * p) <= 3.5 * sd, (cell, row.k, p)
    assert table.loc[("thick->bright", "same_source"), "significant"]
    assert table.loc[("thick->bright", "same_source"), "p_adjusted"] < 1e-12
    assert not table.loc[("slant->thick", "same_source"), "significant"]
    assert not table.loc[("slant->thick", "same_destination"), "significant"]
    assert table["simulated"].all()


def test_every_output_carries_the_banner(run, tmp_path):
    work = _copy(run, tmp_path)
    assert _invoke("simulate", work, "--p-cause", "0.7").exit_code == 0
    res = _invoke("analyze", work / runs.RESULTS, "--n-boot", 0, "--no-gee")
    assert res.exit_code == 0
    banner = "SIMULATED DATA: all judgements come from simulated annotators"
    assert res.stdout.splitlines()[1].startswith("!! " + banner)
    assert res.stderr.startswith(banner)
    out = work / "analysis"
    assert (out / "table2.md").read_text().startswith(f"> **{banner}")
    tex = (out / "table2.tex").read_text()
    assert tex.startswith(f"% {banner}") and tex.count("\\caption{SIMULATED DATA") == 3
    data = json.loads((out / "analysis.json").read_text())
    assert data["simulated"]["banner"].startswith(banner)
    assert data["simulated"]["judgements"] == data["simulated"]["of"] > 0
    assert pd.read_csv(out / "workers.csv")["simulated"].all()
    assert pd.read_csv(out / "table2.csv")["simulated"].all()
    rows = pd.read_csv(work / runs.RESULTS, dtype=str)
    assert rows["WorkerId"].str.startswith("SIM-").all()
    assert rows["RequesterAnnotation"].eq(f"cage-eval:{DEFAULT_RUN_ID};simulated").all()
    assert rows["Title"].str.startswith("SIMULATED").all()


def test_real_answers_get_no_banner_and_mixed_ones_say_how_many(run, tmp_path):
    from hitgen.items import read_hit_items

    real = write_results(tmp_path / "real.csv", simulate(read_hit_items(run), n_workers=9),
                         DEFAULT_RUN_ID)
    res = _invoke("analyze", real, "--run", run, "--n-boot", 0, "--no-gee", "--out",
                  tmp_path / "a")
    assert res.exit_code == 0 and "SIMULATED" not in res.output
    assert not pd.read_csv(tmp_path / "a" / "table2.csv")["simulated"].any()
    sim = tmp_path / "sim.csv"
    assert _invoke("simulate", run, "--out", sim).exit_code == 0
    mixed = tmp_path / "mixed.csv"
    mixed.write_text(real.read_text() + "".join(sim.read_text().splitlines(True)[1:11]))
    res = _invoke("analyze", mixed, "--run", run, "--n-boot", 0, "--no-gee", "--out",
                  tmp_path / "b")
    assert res.exit_code == 0, res.output
    assert "SIMULATED DATA: 10 of " in res.stderr


def test_same_seed_same_bytes_and_spammers_fail_attention_checks(run, tmp_path):
    model = CrowdModel(workers=12, spammers=0.25, seed=3)
    planted = parse_preferences(["0.8"], CELLS)
    a = simulate_results(run, planted, model, out=tmp_path / "a.csv")
    b = simulate_results(run, planted, model, out=tmp_path / "b.csv")
    c = simulate_results(run, planted, CrowdModel(workers=12, spammers=0.25, seed=4),
                         out=tmp_path / "c.csv")
    assert a.path.read_bytes() == b.path.read_bytes() != c.path.read_bytes()
    assert len(a.spammers) == 3 and a.rows == 3 * a.items
    res = _invoke("analyze", a.path, "--run", run, "--n-boot", 0, "--no-gee", "--out",
                  tmp_path / "out")
    assert res.exit_code == 0, res.output
    workers = pd.read_csv(tmp_path / "out" / "workers.csv").set_index("worker_id")
    honest = workers.drop(index=list(a.spammers))
    assert (honest["attention_accuracy"] == 1.0).all()
    excluded = set(workers.index[workers["excluded"].fillna("").astype(str) != ""])
    assert excluded and excluded <= set(a.spammers)


def test_annotator_and_pair_noise_keep_the_direction(run, tmp_path):
    model = CrowdModel(annotator_sd=0.5, pair_sd=1.0, seed=1)
    rep = simulate_results(run, parse_preferences(["0.8"], CELLS), model,
                           out=tmp_path / "noisy.csv")
    for k, n in rep.observed.values():
        assert 0.5 < k / n < 0.85


@pytest.mark.parametrize("case", ["no items", "bad p", "unknown dag", "pool", "real results",
                                  "published"])
def test_mistakes_are_one_error_line(case, run, tmp_path):
    work = _copy(run, tmp_path)
    args = ["simulate", work]
    if case == "no items":
        bare = make_run_dir(tmp_path / "bare", pairs_per_cell=1, size=8)
        args, want = ["simulate", bare], f"{bare / runs.HIT_ITEMS}: missing; make the HIT " \
                                        f"items first with `cage-eval hits {bare}`"
    elif case == "bad p":
        args += ["--p-cause", "thick->bright=1.2"]
        want = "--p-cause: preference 'thick->bright=1.2': '1.2' is not a probability"
    elif case == "unknown dag":
        args += ["--p-cause", "bright->thick=0.7"]
        want = "DAG or setting 'bright->thick' is not in the run"
    elif case == "pool":
        args += ["--workers", 2]
        want = "--workers 2 --annotators 3: "
    elif case == "real results":
        (work / runs.RESULTS).write_text(",".join(runs.RESULTS_COLUMNS) + "\n")
        want = "exists and holds answers that are not simulated"
    else:
        (work / runs.TURKLE_LEDGER).write_bytes(b"")
        want = "the run was published"
    before = (work / runs.RESULTS).read_bytes() if (work / runs.RESULTS).exists() else None
    res = _invoke(*args)
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and want in lines[0], res.output
    if case in ("real results", "published"):
        assert lines[0].endswith("(--out FILE)")
    after = (work / runs.RESULTS).read_bytes() if (work / runs.RESULTS).exists() else None
    assert after == before
