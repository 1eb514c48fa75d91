"""What ``cage-eval report`` gathers from a run (report/data.py, report/answers.py) and
how it renders (report/html.py), on hand-made run files."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
from decimal import Decimal

import pytest
from analysis_fixtures import make_analysis_run, simulate, write_results
from crowd_fixtures import DEFAULT_RUN_ID
from report_fixtures import (
    RUN_ID,
    default_directions,
    directions_csv_rows,
    make_report_run,
    pair_direction,
    png,
)

from cage_eval import files, runs
from cage_eval.cli.published import Spending, spending
from cage_eval.errors import RunDirError
from report import explain
from report.answers import ANALYSIS_JSON, read_answers
from report.data import call_text, read_report
from report.html import render_report, write_report

SECTIONS = ("summary", "facts", "separability", "directions", "plots", "pairs", "answers",
            "money", "reproduce")


@pytest.fixture()
def run(tmp_path):
    return make_report_run(tmp_path / "run")


# --------------------------------------------------------------------------- sentences


SENTENCE_CASES = {
    "independent": pair_direction(),
    "arrow, controlled": pair_direction(direction="->", cause="thick", effect="bright",
                                        reason="", direction_controlled="->",
                                        reason_controlled="", direction_paper="->"),
    "reverse arrow, paper rule": pair_direction(rule="paper", direction="<-", cause="bright",
                                                effect="thick", direction_paper="<-",
                                                direction_controlled="?",
                                                reason_controlled="not-significant+alpha-unstable"),
    "undetermined, every reason": pair_direction(
        outcome="observation", direction="?", direction_controlled="?", direction_paper="->",
        reason="geometry-only+not-significant+balance-driven+alpha-unstable",
        reason_controlled="geometry-only+not-significant+balance-driven+alpha-unstable"),
    "undetermined latent geometry, nan control": pair_direction(
        direction="?", direction_controlled="?", reason="geometry-only",
        reason_controlled="geometry-only", delta_tau_geometric=float("nan")),
    "conditional variant": pair_direction(outcome="observation_conditional"),
}


@pytest.mark.parametrize("case", list(SENTENCE_CASES))
def test_a_directions_csv_row_reads_as_the_records_sentence(case):
    d = SENTENCE_CASES[case]
    rows = directions_csv_rows([d])
    text = files.csv_text(rows, list(rows[0]))
    (row,) = csv.DictReader(io.StringIO(text))
    assert explain.sentence_from_row(row) == explain.sentence(d)
    assert explain.sentence(d).startswith("CAGE finds ")


def test_the_sentences_need_no_torch():
    import subprocess
    import sys

    code = ("import sys, report.explain, report.data, report.html\n"
            "print(','.join(m for m in ('torch', 'numpy', 'pandas', 'matplotlib') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --------------------------------------------------------------------------- the engine's part


def test_facts_come_from_the_manifest(run):
    facts = read_report(run).facts
    assert (facts.run_id, facts.experiment, facts.seed, facts.rule) == (RUN_ID, "handmade", 3,
                                                                          "controlled")
    assert facts.p_resolution == pytest.approx(0.02) and not facts.resolution_too_coarse
    assert facts.versions["torch"] == "2.13.0" and facts.config["cage"]["k"] == 1000
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", facts.created)
    coarse = make_report_run(run.parent / "coarse", n_null=5)
    assert read_report(coarse).facts.resolution_too_coarse


def test_separability_verdict(run, tmp_path):
    sep = read_report(run).separability
    assert len(sep.rows) == 6 and not sep.failing
    assert sep.verdict.startswith("Every attribute is linearly separable (threshold 0.75)")
    weak = read_report(make_report_run(tmp_path / "weak", classifier_accuracy=0.6)).separability
    assert [r.attribute for r in weak.failing] == ["bright", "thick", "wide"]
    assert weak.verdict.startswith("NOT linearly separable (threshold 0.75): bright (latent, "
                                   "0.600)")


def test_directions_are_grouped_by_pair_with_calls_and_sentences(run):
    data = read_report(run)
    assert [(p.m1, p.m2) for p in data.pairs_tested] == [("thick", "bright"), ("thick", "wide")]
    tb, tw = data.pairs_tested
    assert [d.variant for d in tb.directions] == ["eq. 8 latent", "eq. 9 observation"]
    assert tb.headline == ("CAGE finds no effect between thick and bright (eq. 8 latent); "
                           "CAGE finds thick and bright associated but no direction "
                           "(eq. 9 observation)")
    assert tw.headline == "CAGE finds thick → wide (eq. 8 latent)"
    obs = tb.directions[1]
    # The row says geometry-only, as runs did before eq. 9's reason had its own name: it reads
    # as the rotation null, in the tables and the sentence.
    assert (obs.call, obs.call_paper, obs.reasons) == ("undetermined (?)", "thick → bright",
                                                       ("rotation-null",))
    assert obs.reasons_controlled == ("rotation-null",)
    assert "inside the rotation null (p(Δτ rotation) = " in obs.sentence
    assert obs.values["p_gate_12"] == pytest.approx(0.02) and obs.values["separable"] is True
    assert obs.sentence == explain.sentence(default_directions()[1])
    assert call_text("<-", "a", "b") == "b → a" and call_text("", "a", "b") == "–"


def test_baselines_are_shown_when_computed(tmp_path):
    from cage.run.baselines import BaselineVerdict

    verdicts = tuple(BaselineVerdict(method=m, m1="thick", m2="bright", verdict=v,
                                     score=0.1, p_forward=float("nan"),
                                     p_backward=float("nan"), n=100, available=ok, note="",
                                     package="x")
                     for m, v, ok in (("LiNGAM", "->", True), ("ANM", "?", True),
                                      ("NOTEARS", "?", False)))
    run = make_report_run(tmp_path / "run", directions=[pair_direction(baselines=verdicts)])
    (d,) = read_report(run).directions
    report = read_report(run)
    (d,) = report.directions
    assert d.baselines == (("LiNGAM", "thick → bright"), ("ANM", "undetermined (?)"))
    assert report.baselines_missing == ("NOTEARS",)
    assert report.baselines_note == (
        "NOTEARS was not computed: their packages (causal-learn for LiNGAM and ANM, gcastle for "
        "NOTEARS) were not installed when this run was made. Install them with pip install -e "
        "'.[baselines]' from the root of your clone and generate the run again "
        "(docs/baselines.md).")
    assert not read_report(make_report_run(tmp_path / "none")).has_baselines


def test_baselines_that_could_not_run_are_said_once_with_the_install_line(tmp_path):
    """Every baseline unavailable (the extra not installed): no table of 'unavailable' cells,
    one sentence saying why and how to install them."""
    from cage.run.baselines import BaselineVerdict
    from report.html import render_report

    verdicts = tuple(BaselineVerdict(method=m, m1="thick", m2="bright", verdict="?",
                                     score=float("nan"), p_forward=float("nan"),
                                     p_backward=float("nan"), n=0, available=False, note="",
                                     package="") for m in ("LiNGAM", "ANM", "NOTEARS"))
    run = make_report_run(tmp_path / "run", directions=[
        pair_direction(baselines=verdicts), pair_direction(outcome="observation",
                                                           baselines=verdicts)])
    report = read_report(run)
    assert not report.has_baselines
    assert report.baselines_missing == ("LiNGAM", "ANM", "NOTEARS")
    html = render_report(report)
    assert "unavailable" not in html
    assert html.count("LiNGAM, ANM and NOTEARS were not computed") == 1
    assert html.count("pip install -e &#39;.[baselines]&#39;") == 1


def test_an_older_directions_csv_without_optional_columns(run):
    rows = list(csv.DictReader(open(run / runs.DIRECTIONS, encoding="utf-8")))
    keep = [c for c in rows[0] if c not in ("lingam", "anm", "notears", "mmd_2", "p_mmd_2")]
    files.atomic_write_csv(run / runs.DIRECTIONS, [{c: r[c] for c in keep} for r in rows], keep)
    data = read_report(run)
    assert data.directions[0].values["mmd_2"] is None and not data.has_baselines
    assert "MMD" in render_report(data)


def test_plots_by_pair_missing_extra_and_broken(run):
    (run / runs.PLOTS_DIR / "mmd__thick__wide.png").unlink()
    (run / runs.PLOTS_DIR / "null__thick__bright__latent.png").write_bytes(b"not a png")
    (run / runs.PLOTS_DIR / "extra.png").write_bytes(png(10, 10))
    data = read_report(run)
    tb, tw = data.plots
    assert [f.path for f in tb.figures] == ["plots/delta_tau__thick__bright.png",
                                            "plots/mmd__thick__bright.png",
                                            "plots/null__thick__bright__observation.png"]
    assert (tb.figures[0].width, tb.figures[0].height) == (40, 30)
    assert "GATE(thick→bright)" in tb.figures[0].caption
    assert [f.path for f in tw.figures] == ["plots/delta_tau__thick__wide.png",
                                            "plots/null__thick__wide__latent.png"]
    assert data.missing_plots == ("plots/null__thick__bright__latent.png",
                                  "plots/mmd__thick__wide.png")
    assert [f.path for f in data.other_plots] == ["plots/extra.png"]


def test_pairs_provenance_and_contact_sheets(run, tmp_path):
    pairs = read_report(run).pairs
    (dag,) = pairs.dags
    assert (dag.dag, dag.source, dag.cage_call, dag.rows) == ("thick->bright", "declared",
                                                              "undetermined (?)", 8)
    assert list(dag.settings) == ["same_source", "same_destination"]
    assert [s.path for s in dag.sheets] == ["sheets/thick_to_bright__same_source.png",
                                            "sheets/thick_to_bright__same_destination.png"]
    assert dag.stats["same_source"]["success_first_alpha"] == 0.75
    assert pairs.skipped[0]["m2"] == "wide" and pairs.other_sheets == ()
    # A manifest naming a file outside the run never gets it inlined.
    (tmp_path / "secret.png").write_bytes(png())
    manifest = json.loads((run / runs.MANIFEST).read_text())
    manifest["pairs"]["dag_sources"][0]["sheets"] = ["../secret.png", "/etc/passwd"]
    files.atomic_write_json(run / runs.MANIFEST, manifest)
    pairs = read_report(run).pairs
    assert pairs.dags[0].sheets == ()
    assert sorted(f.path for f in pairs.other_sheets) == [
        "sheets/thick_to_bright__same_destination.png", "sheets/thick_to_bright__same_source.png"]
    assert read_report(make_report_run(tmp_path / "nopairs", pairs=False)).pairs is None


# --------------------------------------------------------------------------- bad runs


def test_what_is_not_a_complete_run(run, tmp_path):
    with pytest.raises(RunDirError, match="no such run directory"):
        read_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="manifest.json: missing"):
        read_report(tmp_path / "empty")
    manifest = json.loads((run / runs.MANIFEST).read_text())
    files.atomic_write_json(run / runs.MANIFEST, {**manifest, "complete": False})
    with pytest.raises(RunDirError, match="the run is not complete"):
        read_report(run)
    files.atomic_write_json(run / runs.MANIFEST, manifest)
    text = (run / runs.DIRECTIONS).read_text().replace("p_delta_tau_centred", "renamed", 1)
    (run / runs.DIRECTIONS).write_text(text)
    with pytest.raises(RunDirError, match=r"directions.csv: missing column\(s\) "
                                          "p_delta_tau_centred"):
        read_report(run)
    (run / runs.DIRECTIONS).unlink()
    with pytest.raises(RunDirError, match="directions.csv: missing; run `cage-eval generate"):
        read_report(run)


# --------------------------------------------------------------------------- answers and money


@pytest.fixture()
def answered(tmp_path):
    """A hand-made run with pairs, HIT items, simulated-style answers and their analysis."""
    from analysis.report import AnalysisOptions, analyze_file
    from analysis.tables import write_outputs

    run, items = make_analysis_run(tmp_path / "answered", pairs_per_cell=3, attention_rate=0.2)
    make_report_run(run, run_id=DEFAULT_RUN_ID)
    results = write_results(run / runs.RESULTS, simulate(items, p_cause=0.8, seed=2),
                            DEFAULT_RUN_ID)
    result = analyze_file(results, options=AnalysisOptions(n_boot=0, gee=False))
    write_outputs(result, run / runs.ANALYSIS_DIR)
    return run


def test_answers_before_and_after_the_analysis(answered, tmp_path):
    bare = make_report_run(tmp_path / "bare")
    none = read_answers(bare, RUN_ID)
    assert none.status == "none" and none.banner is None and "No answers yet" in none.message
    shutil.copy(answered / runs.RESULTS, bare / runs.RESULTS)
    collected = read_answers(bare, RUN_ID)
    assert collected.status == "collected" and collected.results_rows > 0
    assert collected.message.startswith(f"{runs.RESULTS} holds {collected.results_rows} "
                                        "assignment row(s), not analysed yet")

    got = read_answers(answered, DEFAULT_RUN_ID)
    assert got.status == "analysed" and got.banner is None
    assert {(c["dag"], c["setting"]) for c in got.cells} == {
        (d, s) for d in ("thick->bright", "slant->thick") for s in runs.SETTINGS}
    assert sum(c["n"] for c in got.cells) == got.overall["judgements"]
    assert got.settings == ["same_source", "same_destination"]
    dag, row = got.grid[0]
    assert len(row) == 2 and row[0]["dag"] == dag
    assert got.coverage.complete and got.coverage.total("pairs_in_run") == 12
    assert got.exclusions[0].startswith("Judgements: 36 pair judgements and ")
    assert got.caption.startswith("Judgements preferring the cause-manipulated image / all "
                                  "judgements; exact two-sided binomial test against 0.5; * = "
                                  "significant at 0.05 after Bonferroni correction within "
                                  "each setting's DAGs; 95% Clopper-Pearson intervals.")
    assert got.workers and {"worker_id", "excluded"} <= set(got.workers[0])


def test_simulated_answers_carry_the_banner(answered, tmp_path):
    data = json.loads((answered / ANALYSIS_JSON).read_text())
    data["simulated"] = {"judgements": 3, "of": 40, "banner": "SIMULATED DATA: 3 of 40 ..."}
    files.atomic_write_json(answered / ANALYSIS_JSON, data)
    assert read_answers(answered, DEFAULT_RUN_ID).banner == "SIMULATED DATA: 3 of 40 ..."
    # Unanalysed simulated rows say so too.
    bare = make_report_run(tmp_path / "bare")
    text = (answered / runs.RESULTS).read_text().replace("A00", "SIM-W")
    (bare / runs.RESULTS).write_text(text)
    got = read_answers(bare, RUN_ID)
    assert got.banner.startswith(f"SIMULATED DATA: {got.simulated_rows} of {got.results_rows} "
                                 "rows of results.csv")


def test_an_analysis_of_another_run_or_older_than_the_answers(answered):
    other = read_answers(answered, "ffffffffffff")
    assert other.status == "stale" and other.cells == ()
    assert other.message == (f"{ANALYSIS_JSON} analyses run {DEFAULT_RUN_ID}, not this run "
                             "(ffffffffffff); run cage-eval analyze again.")
    later = (answered / ANALYSIS_JSON).stat().st_mtime + 10
    os.utime(answered / runs.RESULTS, (later, later))
    assert "changed after this analysis" in read_answers(answered, DEFAULT_RUN_ID).message
    (answered / ANALYSIS_JSON).write_text("{not json")
    broken = read_answers(answered, DEFAULT_RUN_ID)
    assert broken.status == "stale" and "is unreadable" in broken.message


def test_spending_from_the_ledgers(answered, tmp_path):
    from crowds.turkle.ledger import PUBLISHED, Publication, TurkleLedger
    from mturk.ledger import Ledger

    assert spending(answered) is None
    settings = {"reward": "0.10", "assignments": 3}
    with Ledger.create(answered, environment="sandbox", run_id=DEFAULT_RUN_ID,
                       settings=settings,
                       items=[(f"i{k}", "pair", f"t{k}") for k in range(4)]) as ledger:
        ledger.mark_creating("i0", "TYPE")
        ledger.mark_created("i0", "HIT0", "TYPE")
    money = spending(answered)
    approved = sum(1 for r in csv.DictReader(open(answered / runs.RESULTS))
                   if r["AssignmentStatus"] == "Approved")
    assert (money.backend, money.environment, money.hits_published, money.hits_planned) == (
        "mturk", "sandbox", 1, 4)
    assert money.per_assignment == Decimal("0.12") and money.planned_total == Decimal("1.44")
    assert money.approved == approved > 0 and money.paid == Decimal("0.12") * approved
    assert money.real_paid == 0 and not money.real_money
    html = render_report(read_report(answered, spending=spending))
    assert f"MTurk sandbox: $0.00 real money (the same work in production would have cost " \
           f"${money.paid:.2f})" in html
    production = Spending("mturk", "production", 4, 4, 3, Decimal("0.10"), Decimal("0.02"),
                          Decimal("1.44"), approved=2, submitted=1)
    assert production.real_paid == Decimal("0.24") and production.committed == Decimal("0.36")

    turkle_run = make_report_run(tmp_path / "turkle")
    with TurkleLedger.open(turkle_run, create=True) as turkle:
        turkle.start(Publication(
            run_id=RUN_ID, server_url="http://127.0.0.1:1", project_name="p", batch_name="b",
            project_id=1, batch_id=2, assignments_per_task=2, allotted_hours=24,
            images="data-uri", n_tasks=5, input_sha256="a" * 64, template_sha256="b" * 64,
            state=PUBLISHED, created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z"))
    local = spending(turkle_run)
    assert (local.backend, local.hits_published, local.real_paid) == ("turkle", 5, 0)
    assert "no money changes hands. 5 of 5 tasks published, 2 assignment(s) each" in \
        render_report(read_report(turkle_run, spending=spending))


def test_spending_of_a_prolific_study_is_what_its_ledger_says_was_paid(tmp_path):
    """A Prolific run also has the Turkle ledger of its tasks: the money is Prolific's (GBP,
    rewards of approved submissions, Prolific's fee per place, bonuses paid and their fees)."""
    from crowds.prolific.ledger import ProlificLedger
    from crowds.turkle.ledger import PUBLISHED, Publication, TurkleLedger

    run = make_report_run(tmp_path / "prolific")
    with TurkleLedger.open(run, create=True) as turkle:
        turkle.start(Publication(
            run_id=RUN_ID, server_url="http://127.0.0.1:1", project_name="p", batch_name="b",
            project_id=1, batch_id=2, assignments_per_task=3, allotted_hours=2,
            images="data-uri", n_tasks=4, input_sha256="a" * 64, template_sha256="b" * 64,
            state=PUBLISHED, created_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z"))
    with ProlificLedger.open(run, create=True, run_id=RUN_ID) as ledger:
        ledger.set_meta("settings", json.dumps({"reward": 150, "currency": "GBP"}))
        ledger.study_creating(6, 2)
        ledger.study_created("s1", how="created")
        ledger.study_state("published")
    assert spending(run).paid == 0 and spending(run).fee_per_assignment is None
    with ProlificLedger.open(run) as ledger:
        ledger.set_meta("study_cost", json.dumps({"places": 6, "total_cost": 1200}))
        for n, status in enumerate(["APPROVED"] * 3 + ["AWAITING REVIEW", "REJECTED",
                                                        "RETURNED"]):
            ledger.upsert_session(f"sub{n}", f"P{n}", status=status)
        ledger.bonus_state("d1", "creating", csv="P0,1.57", amount=157)
        ledger.bonus_state("d1", "paid", bonus_id="b1", fees="52.33", total="209.33")
        ledger.bonus_state("d2", "created", csv="P1,1.00", amount=100, bonus_id="b2",
                           fees="33.33", total="133.33")  # created, never paid
    money = spending(run)
    assert (money.backend, money.currency, money.places, money.real_money) == (
        "prolific", "GBP", 6, True)
    assert (money.hits_published, money.hits_planned, money.assignments_per_hit) == (4, 4, 3)
    assert (money.approved, money.submitted, money.rejected, money.returned) == (3, 1, 1, 1)
    assert money.reward == Decimal("1.50") and money.fee_per_assignment == Decimal("0.50")
    assert money.rewards_paid == Decimal("4.50")
    assert money.bonuses_paid == Decimal("1.57") and money.bonus_fees == Decimal("0.5233")
    assert money.paid == money.real_paid == Decimal("8.0933")   # 3 x (1.50 + 0.50) + 1.57 + 0.5233
    assert money.committed == Decimal("10.0933") and money.planned_total == Decimal("12.00")
    html = render_report(read_report(run, spending=spending))
    assert "Prolific: £8.09 real money paid so far" in html
    assert "£1.50 reward + £0.50 Prolific fees = £2.00" in html
    assert "3 approved, 1 awaiting review, 1 rejected, 1 returned" in html
    assert "£1.57 + fees £0.52" in html and "no money changes hands" not in html


def test_a_damaged_ledger_is_a_note_not_a_crash(run):
    (run / runs.LEDGER).write_bytes(b"not sqlite at all, not even close" * 10)
    data = read_report(run, spending=spending)
    assert data.money is None and data.money_note.startswith(
        "The publishing ledger could not be read: ")


# --------------------------------------------------------------------------- the page


def _srcs(html: str) -> list[str]:
    return re.findall(r'\ssrc="([^"]*)"', html)


def test_the_page_is_self_contained_and_has_every_section(answered):
    path, data = write_report(answered, spending=spending)
    assert path == answered / runs.REPORT
    html = path.read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f'<section id="{section}"' in html
    assert "Content-Security-Policy" in html and "default-src 'none'; img-src data:" in html
    assert not re.search(r"<(script|link|iframe|object|embed)\b", html)
    srcs = _srcs(html)
    assert len(srcs) == len(data.figures) == 7 + 2
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(?:href|src)=\"(?:https?:)?//", html)
    assert "Table 2" in html and "cause/n" in html and "SIMULATED DATA" not in html
    assert data.outline().startswith("2 pair(s), 3 verdict(s), 7 plot(s), 2 contact sheet(s), "
                                     "Table 2 from ")
    assert not list(answered.glob(".report.html.*"))


def test_missing_parts_say_so(tmp_path):
    run = make_report_run(tmp_path / "run", pairs=False)
    shutil.rmtree(run / runs.PLOTS_DIR)
    html = render_report(read_report(run))
    assert "This experiment makes no counterfactual pairs" in html
    assert "No answers yet" in html and "Nothing was published from this run" in html
    assert "No plot of this pair in plots/." in html and "Missing: plots/" in html
    assert _srcs(html) == []


def test_run_values_are_escaped_never_markup(tmp_path):
    evil = '<img src=x onerror="alert(1)">'
    run = make_report_run(tmp_path / "run", directions=[pair_direction(m2=evil)])
    html = render_report(read_report(run))
    assert evil not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert all(s.startswith("data:") for s in _srcs(html))


def test_the_report_reads_what_analyze_writes(answered):
    """Drift guard: every analysis.json field the report shows exists, and Table 2's caption
    reads as analyze's own."""
    import dataclasses

    from analysis.coverage import CellCoverage
    from analysis.plan import AnalysisPlan
    from analysis.report import AnalysisOptions, analyze_file
    from analysis.tables import TABLE2_COLUMNS, caption
    from analysis.workers import WORKER_COLUMNS
    from report import answers as ra

    assert set(ra.CELL_KEYS) <= set(TABLE2_COLUMNS)
    assert set(ra.WORKER_KEYS) <= {*WORKER_COLUMNS, "simulated"}
    assert set(ra.PLAN_KEYS) == {f.name for f in dataclasses.fields(AnalysisPlan)}
    assert set(ra.COVERAGE_KEYS) <= {f.name for f in dataclasses.fields(CellCoverage)}
    data = json.loads((answered / ANALYSIS_JSON).read_text())
    assert set(ra.OVERALL_KEYS) <= set(data["overall"])
    for correction in ("bonferroni", "holm", "none"):
        result = analyze_file(answered / runs.RESULTS, overrides={"correction": correction},
                              options=AnalysisOptions(n_boot=0, gee=False))
        got = ra.analysed_answers({**data, "plan": result.plan.to_dict()})
        assert got.caption == caption(result)
