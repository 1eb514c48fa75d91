"""Every input layout to the same tables; run discovery; exclusion rules and flags."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from analysis_fixtures import (
    make_analysis_run,
    simulate,
    write_batch,
    write_results,
    write_tidy,
    write_turkle,
)
from crowd_fixtures import DEFAULT_RUN_ID

from analysis.ingest import detect_format, read_header
from analysis.plan import AnalysisPlan
from analysis.report import AnalysisOptions, analyze_file
from analysis.tables import render_outputs, table2_frame
from cage_eval import runs
from cage_eval.errors import InputFileError, RunDirError

PLANTED = {("thick->bright", "same_source"): 0.8, ("thick->bright", "same_destination"): 0.3,
           ("slant->thick", "same_source"): 0.5, ("slant->thick", "same_destination"): 0.6}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    run, items = make_analysis_run(base / "run", pairs_per_cell=20, attention_rate=0.1)
    judgements = simulate(items, p_cause=PLANTED, attention_accuracy=1.0, n_workers=10)
    files = {
        "mturk": write_results(run / runs.RESULTS, judgements, DEFAULT_RUN_ID),
        "batch": write_batch(base / "Batch_5012345_batch_results.csv", judgements),
        "turkle": write_turkle(base / "turkle_results.csv", judgements),
        "tidy": write_tidy(base / "tidy.csv", judgements),
    }
    return run, items, judgements, files


OPTS = AnalysisOptions(n_boot=300)


def test_every_layout_gives_identical_tables(study):
    run, _, _, files = study
    results = {}
    for fmt, path in files.items():
        res = analyze_file(path, run_dir=None if fmt in ("mturk", "tidy") else run, options=OPTS)
        assert res.fmt == fmt
        results[fmt] = res
    ref = table2_frame(results["mturk"])
    assert ref["n"].sum() == 240 and len(ref) == 4
    for fmt in ("batch", "turkle", "tidy"):
        pd.testing.assert_frame_equal(table2_frame(results[fmt]), ref, check_exact=True)
        if fmt != "tidy":  # tidy files carry no attention items, so the notes differ
            texts = render_outputs(results[fmt])
            assert texts["table2.md"] == render_outputs(results["mturk"])["table2.md"]
    # The headline counts are the simulated ones.
    cause = {}
    for j in study[2]:
        if j.item.kind == "pair":
            key = (j.item.dag, j.item.setting)
            cause[key] = cause.get(key, 0) + (j.item.role_of(j.choice) == "cause")
    for r in ref.itertuples():
        assert r.k == cause[(r.dag, r.setting)] and r.n == 60
    assert results["mturk"].exclusions.attention_rows_in == 3 * 8


def test_layouts_are_detected_from_the_header(study):
    _, _, _, files = study
    for fmt, path in files.items():
        assert detect_format(read_header(path)) == fmt


def test_run_found_from_results_location_and_from_item_ids(study, tmp_path, monkeypatch):
    run, _, _, files = study
    assert analyze_file(files["mturk"], options=OPTS).run_dir == run.resolve()
    # A Turkle file elsewhere, no run id inside: found by its item ids among ./runs/*.
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "digits").symlink_to(run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    res = analyze_file(files["turkle"], options=OPTS)
    assert res.run_id == DEFAULT_RUN_ID
    # A batch file next to the run is found too (sibling directories are searched) ...
    assert analyze_file(files["batch"], options=OPTS).run_id == DEFAULT_RUN_ID
    # ... but one far from any run is not.
    lonely = tmp_path / "elsewhere"
    lonely.mkdir()
    copy = lonely / files["batch"].name
    copy.write_bytes(files["batch"].read_bytes())
    monkeypatch.chdir(lonely)
    with pytest.raises(RunDirError, match="pass --run DIR"):
        analyze_file(copy, options=OPTS)


def test_crowd_form_task_answers_and_bom(study, tmp_path):
    run, _, judgements, files = study
    df = pd.read_csv(files["batch"], dtype=str, keep_default_na=False)
    df["Answer.taskAnswers"] = [json.dumps([{"choice": {"top": c == "top", "bottom": c == "bottom"}}])
                                for c in df["Answer.choice"]]
    df = df.drop(columns=["Answer.choice"])
    path = tmp_path / "crowdform.csv"
    path.write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
    res = analyze_file(path, run_dir=run, options=OPTS)
    ref = analyze_file(files["mturk"], options=OPTS)
    pd.testing.assert_frame_equal(table2_frame(res), table2_frame(ref))


def _edit_results(src: Path, dst: Path, edit) -> Path:
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    df = edit(df)
    dst.write_text(df.to_csv(index=False))
    return dst


def test_rejected_duplicates_and_repeat_judgements_are_excluded_and_flagged(study, tmp_path):
    run, _, _, files = study
    pair_rows = None

    def edit(df):
        nonlocal pair_rows
        items = pd.read_csv(run / runs.HIT_ITEMS, dtype=str, keep_default_na=False)
        kind = df["Input.item_id"].map(dict(zip(items.item_id, items.kind, strict=True)))
        pair_rows = df.index[kind == "pair"]
        df.loc[pair_rows[:5], "AssignmentStatus"] = "Rejected"
        dup = df.loc[[pair_rows[10]]]                       # same assignment downloaded twice
        again = df.loc[[pair_rows[20]]].copy()              # same worker, same pair, later
        again["AssignmentId"] = "3NEWASSIGNMENT"
        again["SubmitTime"] = "Sun Nov 29 10:00:00 UTC 2026"
        again["Answer.choice"] = "bottom" if again["Answer.choice"].iloc[0] == "top" else "top"
        return pd.concat([again, df, dup], ignore_index=True)  # the later one comes first in file

    path = _edit_results(files["mturk"], run.parent / "edited_results.csv", edit)
    res = analyze_file(path, run_dir=run, options=OPTS)
    ex = res.exclusions
    assert ex.rejected_pair_rows == 5
    assert len(ex.duplicate_assignments) == 1 and ex.duplicate_assignment_conflicts == 0
    assert len(ex.repeat_judgements) == 2 and ex.repeat_dropped_rows == 1
    assert 2 in [line for line, _, _ in ex.repeat_judgements]
    ref = analyze_file(files["mturk"], options=OPTS)
    assert table2_frame(res)["n"].sum() == table2_frame(ref)["n"].sum() - 5
    kept_all = analyze_file(path, run_dir=run, options=OPTS,
                            overrides={"duplicates": "keep-all", "exclude_rejected": False})
    assert table2_frame(kept_all)["n"].sum() == table2_frame(ref)["n"].sum() + 1
    assert [o[0] for o in kept_all.overrides] == ["exclude_rejected", "duplicates"]


def test_attention_rule_drops_failing_workers_and_reports_them(tmp_path):
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=10, attention_rate=0.5)
    judgements = simulate(items, p_cause=0.5, n_workers=6, seed=3)
    bad = judgements[0].worker
    for j in judgements:  # one worker gets every attention item wrong
        if j.worker == bad and j.item.kind == "attention":
            j.choice = "bottom" if j.item.expected == "top" else "top"
    path = write_results(run / runs.RESULTS, judgements, DEFAULT_RUN_ID)
    res = analyze_file(path, options=OPTS)
    ex = res.exclusions
    n_bad_pairs = sum(1 for j in judgements if j.worker == bad and j.item.kind == "pair")
    assert ex.attention_failed_workers == [bad]
    assert ex.attention_dropped_rows == n_bad_pairs
    assert ex.pair_rows_out == ex.pair_rows_in - n_bad_pairs
    row = res.workers.set_index("worker_id").loc[bad]
    assert row.attention_accuracy == 0.0 and row.excluded == "attention checks failed"
    assert row.pair_judgements_kept == 0
    lenient = analyze_file(path, options=OPTS, overrides={"attention_min_accuracy": 0.0})
    assert lenient.exclusions.attention_failed_workers == []


def test_worker_summary_counts_and_median_time(study):
    _, _, judgements, files = study
    res = analyze_file(files["mturk"], options=OPTS)
    w = res.workers.set_index("worker_id")
    for worker in {j.worker for j in judgements}:
        mine = [j for j in judgements if j.worker == worker]
        assert w.loc[worker, "pair_judgements"] == sum(j.item.kind == "pair" for j in mine)
        assert w.loc[worker, "attention_answered"] == sum(j.item.kind == "attention" for j in mine)
        assert w.loc[worker, "median_work_time_s"] == pd.Series(
            [j.work_time_s for j in mine]).median()


def test_turkle_multi_valued_answer_is_an_error(study, tmp_path):
    run, _, _, files = study
    path = _edit_results(files["turkle"], tmp_path / "t.csv",
                         lambda df: df.assign(**{"Answer.choice": ["['top', 'bottom']"] * len(df)}))
    with pytest.raises(InputFileError, match=r"line 2: column Answer.choice: several answers"):
        analyze_file(path, run_dir=run, options=OPTS)


def test_drop_unknown_sets_rows_aside(study, tmp_path):
    run, _, _, files = study
    path = _edit_results(files["mturk"], tmp_path / "u.csv",
                         lambda df: df.assign(**{"Input.item_id": ["hdeadbeef"] + list(
                             df["Input.item_id"].iloc[1:])}))
    res = analyze_file(path, run_dir=run,
                       options=dataclasses.replace(OPTS, drop_unknown=True))
    assert res.join.unknown_items == [(2, "hdeadbeef")]


def test_frozen_plan_is_followed(study, tmp_path):
    import shutil

    from analysis.plan import freeze_plan

    run, _, judgements, _ = study
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    freeze_plan(copy, AnalysisPlan(correction="holm", family="all", alpha=0.01))
    path = write_results(copy / runs.RESULTS, judgements, DEFAULT_RUN_ID)
    res = analyze_file(path, options=OPTS)
    assert res.plan_origin == "frozen" and res.plan.correction == "holm"
    assert res.plan.family == "all" and res.overrides == []
    over = analyze_file(path, options=OPTS, overrides={"correction": "bonferroni"})
    assert over.overrides == [("correction", "holm", "bonferroni")]


def test_repeat_judgement_keeps_the_earliest_by_submit_time():
    from analysis_fixtures import judgement_frame

    from analysis.exclusions import apply_exclusions, submit_order

    frame = judgement_frame({("a->b", "same_source"): (2, 3)}).iloc[:2].copy()
    frame["worker_id"] = "W1"
    frame["pair_id"] = "p0"
    frame["assignment_id"] = ["A-late", "A-early"]
    frame["submit_time"] = ["Sat Nov 28 18:00:00 UTC 2026", "Sat Nov 28 10:00:00 PST 2026"]
    # 10:00 PST is 18:00 UTC: a tie broken by file order; make the second one earlier.
    frame.loc[1, "submit_time"] = "Sat Nov 28 09:59:59 PST 2026"
    kept, annotated, ex = apply_exclusions(frame, AnalysisPlan())
    assert kept["assignment_id"].tolist() == ["A-early"]
    assert annotated["excluded"].tolist() == ["same worker, same pair again", ""]
    assert ex.repeat_dropped_rows == 1 and len(ex.repeat_judgements) == 2
    order = submit_order(pd.Series(["Sat Nov 28 16:38:44 UTC 2026", "Sat Nov 28 08:38:44 PST 2026",
                                    "garbage"]))
    assert order[0] == order[1] and order[2] == float("inf")
