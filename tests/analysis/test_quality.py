"""Pre-registered quality control: every exclusion rule on planted answers with exact counts, the
fair-rejection rule in the library and in ``cage-eval review``, catch trials that no byte, size,
name or page feature tells from pairs, Table 2 recomputed independently, and the frozen plan
honoured."""

from __future__ import annotations

import csv
import dataclasses
import json
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from analysis_fixtures import Judgement, make_analysis_run, simulate, write_results
from click.testing import CliRunner
from crowd_fixtures import make_run_dir
from mturk_helpers import PUBLISH_OPTIONS
from scipy.stats import mannwhitneyu

from analysis import quality
from analysis.plan import AnalysisPlan, freeze_plan, load_plan, read_plan_file
from analysis.report import AnalysisOptions, analyze_file
from analysis.tables import render_outputs
from cage_eval import runs
from cage_eval.cli import cli
from cage_eval.errors import ConfigError, InputFileError, RunDirError

OPTS = AnalysisOptions(n_boot=0, gee=False)


def invoke(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


# --------------------------------------------------------------------------- planted answers


@dataclasses.dataclass
class Planted:
    """A results file with one planted case per rule and what each rule must catch."""

    run: Path
    path: Path
    plan: AnalysisPlan
    judgements: list[Judgement]
    study: list[str]
    ip: list[str]
    expected_reason: list[str]   # per judgement: the rule key that must exclude it, or ''


def _plant(tmp_path: Path) -> Planted:
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=8, attention_rate=0.5)
    js = simulate(items, p_cause={("thick->bright", "same_source"): 0.8,
                                  ("thick->bright", "same_destination"): 0.6,
                                  ("slant->thick", "same_source"): 0.5,
                                  ("slant->thick", "same_destination"): 0.3},
                  annotators=3, n_workers=12, seed=5)
    workers = sorted({j.worker for j in js})
    blocked, repeat, ip_first, ip_second, careless, *others = workers
    # Two studies: every worker belongs to one (the two sharing an IP address to the same one),
    # except `repeat`, whose first half of answers are in one study and the rest in the other.
    group = {w: ("S-a" if i % 2 else "S-b") for i, w in enumerate(workers)}
    group[ip_second] = group[ip_first]
    study = []
    for n, j in enumerate(js):
        if j.worker == repeat:
            study.append("S-a" if n < len(js) // 2 else "S-b")
        else:
            study.append(group[j.worker])
    shared_ip = quality.hash_ip("203.0.113.7", b"secret")
    ip = [shared_ip if j.worker in (ip_first, ip_second)
          else quality.hash_ip(f"198.51.100.{workers.index(j.worker)}", b"secret") for j in js]
    # `careless` fails every attention check.
    for j in js:
        if j.worker == careless and j.item.kind == "attention":
            j.choice = "bottom" if j.item.expected == "top" else "top"
    # Three fast assignments by the others.
    fast = [n for n, j in enumerate(js) if j.worker in others][5:8]
    for n in fast:
        js[n].work_time_s = 1
    path = write_results(run / runs.RESULTS, js, items_run_id(run))
    _add_columns(path, study, ip)
    plan = AnalysisPlan(min_response_time_s=3.0, blocked_participants=(blocked,))

    # What each rule must catch, worked out from the planting alone: the study that started
    # later holds `repeat`'s later answers; of the two sharing an IP, the later starter loses.
    start = {name: min(j.submit for j, s in zip(js, study, strict=True) if s == name)
             for name in ("S-a", "S-b")}
    later_study = max(start, key=start.get)
    later_ip = max((ip_first, ip_second), key=lambda w: _first_submit(js, w))
    expected = []
    for n, j in enumerate(js):
        if j.worker == blocked:
            expected.append("blocked_participant")
        elif j.worker == repeat and study[n] == later_study:
            expected.append("earlier_study")
        elif j.worker == later_ip:
            expected.append("shared_ip")
        elif j.worker == careless:
            expected.append("attention")
        elif n in fast:
            expected.append("too_fast")
        else:
            expected.append("")
    return Planted(run, path, plan, js, study, ip, expected)


def items_run_id(run: Path) -> str:
    return str(runs.read_manifest(run)["run_id"])


def _first_submit(js: list[Judgement], worker: str):
    return min(j.submit for j in js if j.worker == worker)


def _add_columns(path: Path, study: list[str], ip: list[str]) -> None:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    columns = [*runs.RESULTS_COLUMNS, quality.STUDY_COLUMN, quality.IP_HASH_COLUMN]
    for row, s, h in zip(rows, study, ip, strict=True):
        row[quality.STUDY_COLUMN], row[quality.IP_HASH_COLUMN] = s, h
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def test_every_rule_catches_exactly_the_planted_answers(tmp_path):
    p = _plant(tmp_path)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"plan_version": 2, "plan": p.plan.to_dict()}))
    res = analyze_file(p.path, plan_file=plan_file, options=OPTS)
    ex = res.exclusions
    is_pair = [j.item.kind == "pair" for j in p.judgements]
    want = Counter(r for r, pair in zip(p.expected_reason, is_pair, strict=True) if r and pair)
    for rule in quality.RULES:
        assert ex.by_rule[rule.key]["pair_judgements"] == want.get(rule.key, 0), rule.key
    assert all(want[k] > 0 for k in ("blocked_participant", "earlier_study", "shared_ip",
                                     "attention"))
    assert want["too_fast"] >= 1
    assert ex.participants_by_rule["blocked_participant"] == 1
    assert ex.participants_by_rule["earlier_study"] == 1
    assert ex.participants_by_rule["shared_ip"] == 1
    assert len(ex.earlier_study) == 1 and len(ex.shared_ip) == 1
    assert ex.pair_rows_out == sum(1 for r, pair in zip(p.expected_reason, is_pair, strict=True)
                                   if pair and not r)

    # Table 2 recomputed independently from the planted judgements that no rule excluded.
    k, n = Counter(), Counter()
    for j, r in zip(p.judgements, p.expected_reason, strict=True):
        if j.item.kind == "pair" and not r:
            cell = (j.item.dag, j.item.setting)
            n[cell] += 1
            k[cell] += j.item.role_of(j.choice) == "cause"
    got = {(row.dag, row.setting): (row.k, row.n) for row in res.table.itertuples()}
    assert got == {cell: (k[cell], n[cell]) for cell in n}
    # Beside Table 2: read = analysed + excluded by each rule, per cell.
    read = Counter((j.item.dag, j.item.setting) for j in p.judgements if j.item.kind == "pair")
    for row in res.table.to_dict(orient="records"):
        cell = (row["dag"], row["setting"])
        assert row["judgements_read"] == read[cell]
        assert row["n"] + sum(row[f"excluded_{r.key}"] for r in quality.RULES) == read[cell]

    excluded = dict(zip(res.workers["worker_id"], res.workers["excluded"], strict=True))
    blocked = p.plan.blocked_participants[0]
    assert excluded[blocked] == "blocked participant"
    assert sorted(v for v in excluded.values() if v) == sorted(
        ["blocked participant", "same IP as another participant", "attention checks failed"])

    outputs = render_outputs(res)
    data = json.loads(outputs["analysis.json"])
    by_rule = {r["rule"]: r for r in data["exclusions_by_rule"]}
    assert by_rule["too_fast"]["pair_judgements"] == want["too_fast"]
    assert by_rule["too_fast"]["threshold"] == "< 3 s"
    assert "## Exclusions by rule" in outputs["table2.md"]
    assert "| answered too fast | \\< 3 s | " in outputs["table2.md"]
    assert "Exclusions by rule, pre-registered" in outputs["table2.tex"]
    header = outputs["table2.csv"].splitlines()[0].split(",")
    assert "excluded_shared_ip" in header and "judgements_read" in header
    # The report's answers section lists the same counts.
    from report.answers import analysed_answers

    line = analysed_answers(data).exclusions[-1]
    assert line.startswith("Pair judgements excluded by rule, in the order applied: ")
    assert f"answered too fast (< 3 s): {want['too_fast']};" in line
    assert f"blocked participant (1 id(s) declared): {want['blocked_participant']};" in line


def test_keep_policy_reports_duplicate_participants_without_excluding(tmp_path):
    p = _plant(tmp_path)
    plan_file = tmp_path / "plan.json"
    keep = dataclasses.replace(p.plan, duplicate_participants="keep")
    plan_file.write_text(json.dumps({"plan_version": 2, "plan": keep.to_dict()}))
    ex = analyze_file(p.path, plan_file=plan_file, options=OPTS).exclusions
    assert ex.by_rule["earlier_study"]["rows"] == ex.by_rule["shared_ip"]["rows"] == 0
    planted = sum(r in ("earlier_study", "shared_ip") for r in p.expected_reason)
    assert ex.duplicate_participants_kept == planted and len(ex.shared_ip) == 1


def test_duplicate_participants_on_small_arrays():
    plan = AnalysisPlan(blocked_participants=("X",))
    found = quality.duplicate_participants(
        ["A", "B", "A", "C", "D", "X", "C"],
        ["s1", "s1", "s2", "s2", "s2", "s1", "s1"],
        ["", "", "ip1", "ip1", "ip1", "", ""],
        [10, 11, 30, 31, 29, 5, 40], plan)
    assert found.blocked.tolist() == [False] * 5 + [True, False]
    # s1 starts at 5 (X), s2 at 29: A and C answered in s1 first... C's first answer is in s2 (31)
    # but s1 started earlier, so C's s2 row is the later study's.
    assert found.earlier_study.tolist() == [False, False, True, True, False, False, False]
    # Within s2, D (29) was first with ip1; A (30) and C (31) share it.
    assert found.shared_ip.tolist() == [False, False, True, True, False, False, False]
    assert found.repeats == [("A", "s2", "s1"), ("C", "s2", "s1")]
    assert found.ip_matches == [("s2", "A", "D"), ("s2", "C", "D")]


def test_response_times_from_the_answer_time_stamps():
    got = quality.response_seconds(
        ["Sat Nov 28 16:38:40 UTC 2026", "Sat Nov 28 08:38:40 PST 2026", "", "2026-11-28T16:38:40Z",
         "garbage"],
        ["Sat Nov 28 16:38:44 UTC 2026", "Sat Nov 28 16:38:50 UTC 2026", "", "2026-11-28T16:38:42.5Z",
         "Sat Nov 28 16:38:44 UTC 2026"],
        [99.0, 99.0, 7.0, 99.0, float("nan")])
    assert got[:4].tolist() == [4.0, 10.0, 7.0, 2.5] and np.isnan(got[4])
    plan = AnalysisPlan(min_response_time_s=5)
    assert quality.too_fast(got, plan).tolist() == [True, False, False, True, False]
    assert not quality.too_fast(got, AnalysisPlan()).any()


def test_hash_ip_is_salted_and_never_the_address():
    a = quality.hash_ip("192.0.2.1", b"k1")
    assert a == quality.hash_ip(" 192.0.2.1 ", b"k1") and len(a) == 16
    assert a != quality.hash_ip("192.0.2.1", b"k2") and "192" not in a
    with pytest.raises(ValueError):
        quality.hash_ip("192.0.2.1", b"")


# --------------------------------------------------------------------------- fair rejection


def test_fair_rejection_rule_one_failed_check_never_rejects():
    plan = AnalysisPlan()
    assert plan.reject_min_failed_checks == 2
    assert quality.fair_rejection(0, plan) == quality.PASS
    assert quality.fair_rejection(1, plan) == quality.RETURN
    assert quality.fair_rejection(2, plan) == quality.REJECT
    assert quality.fair_rejection(2, plan.replace(reject_min_failed_checks=3)) == quality.RETURN
    verdicts = quality.review_verdicts(
        [("one", False), ("one", True), ("one", True), ("one", True),
         ("two", False), ("two", False), ("two", True), ("ok", True)], plan)
    assert {k: v.verdict for k, v in verdicts.items()} == {
        "one": quality.RETURN, "two": quality.REJECT, "ok": quality.PASS}
    assert (verdicts["one"].failed, verdicts["one"].checks) == (1, 4)
    assert not verdicts["one"].excluded_by_analysis       # 3/4 = 0.75 is not below 0.75
    assert verdicts["two"].excluded_by_analysis
    assert "not rejected (fair-rejection rule needs 2)" in verdicts["one"].explain(plan)
    assert "rejection allowed" in verdicts["two"].explain(plan)
    with pytest.raises(ConfigError, match="reject_min_failed_checks"):
        AnalysisPlan(reject_min_failed_checks=0)


def test_below_the_rule_a_plan_approves_or_asks_for_a_return(tmp_path):
    plan = AnalysisPlan()
    assert plan.below_rejection == "approve"
    asks = quality.publish_plan(None, below_rejection="ask-return", catch_trials=4)
    assert asks.below_rejection == "ask-return" and asks.catch_trials == 4
    assert asks.replace(below_rejection="approve") == quality.publish_plan(None, catch_trials=4)
    payment = [line for line in quality.describe_rules(asks) if line.startswith("Payment")]
    assert payment == ["Payment (fair rejection): work is rejected for attention only after 2 or "
                       "more failed checks; with fewer failed checks the participant is asked to "
                       "return the submission (Prolific; MTurk and Turkle approve), and the "
                       "answers of a returned submission never count."]
    assert "otherwise it is approved" in quality.describe_rules(plan)[-2]
    with pytest.raises(ConfigError, match="below_rejection='reject'"):
        AnalysisPlan(below_rejection="reject")
    frozen = tmp_path / "plan.json"
    frozen.write_text(json.dumps({"plan_version": 2, "plan": asks.to_dict()}))
    assert read_plan_file(frozen) == asks
    old = tmp_path / "old.json"   # a version-2 plan frozen before the field existed
    old.write_text(json.dumps({"plan_version": 2, "plan": {
        k: v for k, v in plan.to_dict().items() if k != "below_rejection"}}))
    assert read_plan_file(old) == plan
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"plan_version": 1, "plan": {"correction": "holm"}}))
    assert read_plan_file(v1).below_rejection == "approve"


def published(run, server, attention_rate):
    """Publish a run to the local MTurk endpoint; return the client, items and ledger rows."""
    from hitgen.items import read_hit_items
    from mturk.aws import make_client
    from mturk.environments import SANDBOX
    from mturk.hits import HitSettings
    from mturk.ledger import Ledger
    from mturk.publish import PublishRequest, prepare, publish

    settings = HitSettings(reward="0.05", assignments=3, lifetime_s=259200, duration_s=600,
                           auto_approve_s=259200)
    client = make_client(endpoint_url=server.url)
    publish(prepare(run, PublishRequest(settings=settings, attention_rate=attention_rate),
                    SANDBOX), client)
    items = {it.item_id: it for it in read_hit_items(run)}
    with Ledger.open(run) as ledger:
        rows = ledger.rows()
    return client, items, rows


def test_review_follows_the_fair_rejection_rule(aws_env, tmp_path, fake):
    from mturk.review import apply_review, plan_review

    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    client, items, rows = published(run, fake, attention_rate=0.5)
    checks = [r for r in rows if items[r.item_id].kind == "attention"]
    pair = next(r for r in rows if items[r.item_id].kind == "pair")
    assert len(checks) == 4

    def wrong(r):
        return {"choice": "bottom" if items[r.item_id].expected == "top" else "top"}

    once = fake.add_assignment(checks[0].hit_id, "AONCE", wrong(checks[0]))
    fake.add_assignment(checks[1].hit_id, "AONCE", {"choice": items[checks[1].item_id].expected})
    twice = [fake.add_assignment(checks[k].hit_id, "ATWICE", wrong(checks[k])) for k in (0, 1)]
    pair_of_twice = fake.add_assignment(pair.hit_id, "ATWICE", {"choice": "top"})
    decisions = plan_review(run, client, reject_failed_attention=True)
    by_id = {d.assignment_id: d for d in decisions}
    assert by_id[once].action == "approve"                          # 1 failed check: no rejection
    assert "approved by the fair-rejection rule" in by_id[once].reason
    assert [by_id[a].action for a in twice] == ["reject", "reject"]  # 2 failed: rejection allowed
    assert "2 of 2 attention check(s) failed; rejection allowed" in by_id[twice[0]].reason
    assert by_id[pair_of_twice].action == "approve"                  # pair work is paid

    # After one failed check was already rejected by hand, a rerun still counts it.
    report = apply_review(run, client, [by_id[twice[0]]], feedback="Two attention checks failed.",
                          retry_delays=())
    assert report.rejected == 1
    again = {d.assignment_id: d for d in plan_review(run, client, reject_failed_attention=True)}
    assert twice[0] not in again and again[twice[1]].action == "reject"

    # The rule comes from the frozen plan: 3 failures needed -> nothing is rejected.
    strict = load_plan(run).replace(reject_min_failed_checks=3)
    lenient = plan_review(run, client, reject_failed_attention=True, plan=strict)
    assert all(d.action == "approve" for d in lenient)


def test_review_command_says_what_the_rule_did(aws_env, tmp_path, fake):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    client, items, rows = published(run, fake, attention_rate=0.5)
    checks = [r for r in rows if items[r.item_id].kind == "attention"]

    def wrong(r):
        return {"choice": "bottom" if items[r.item_id].expected == "top" else "top"}

    once = fake.add_assignment(checks[0].hit_id, "AONCE", wrong(checks[0]))
    twice = [fake.add_assignment(checks[k].hit_id, "ATWICE", wrong(checks[k])) for k in (1, 2)]
    out = invoke("review", run, "--reject-failed-attention", "--feedback",
                 "Two attention checks (a plainly damaged image) were answered wrongly.", "--yes",
                 "--endpoint-url", fake.url)
    assert out.exit_code == 0, out.output
    assert ("Fair-rejection rule: 2 failed check(s) rejected, 1 approved because their worker "
            "failed too few checks to be rejected") in out.stdout
    assert f"approve {once} (worker AONCE" in out.stdout
    assert out.stdout.endswith("Approved 1, rejected 2\n")
    assert fake.assignments[once]["AssignmentStatus"] == "Approved"
    assert {fake.assignments[a]["AssignmentStatus"] for a in twice} == {"Rejected"}


# --------------------------------------------------------------------------- catch trials


def _png_features(blob: bytes, name: str) -> list[float]:
    width, height = struct.unpack(">II", blob[16:24])
    stem = name.rsplit(".", 1)[0]
    return [len(blob), width, height, len(name), int(stem[:4], 16), int(stem[-4:], 16)]


def _cv_auc(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated AUC of a logistic regression (Newton's method, ridge 1e-3) on standardised
    features: the chance a held-out catch trial scores above a held-out pair."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    scores = np.zeros(len(y))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
        a = np.c_[np.ones(len(train)), (x[train] - mu) / sd]
        w = np.zeros(a.shape[1])
        for _ in range(50):
            p = 1 / (1 + np.exp(-a @ w))
            grad = a.T @ (p - y[train]) + 1e-3 * w
            hess = a.T @ (a * (p * (1 - p))[:, None]) + 1e-3 * np.eye(len(w))
            w -= np.linalg.solve(hess, grad)
        scores[test] = np.c_[np.ones(len(test)), (x[test] - mu) / sd] @ w
    pos, neg = scores[y == 1], scores[y == 0]
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def test_a_classifier_on_size_dimensions_and_names_cannot_find_the_catch_trials(tmp_path):
    from hitgen.items import build_hit_items

    run = make_run_dir(tmp_path / "run", pairs_per_cell=30, png_scale=2)
    items = build_hit_items(run, seed=11, attention_rate=1.0)     # 120 pairs, 120 catch trials
    x, y = [], []
    for it in items:
        top, bottom = ((run / "images" / n).read_bytes() for n in (it.image_top, it.image_bottom))
        ft, fb = _png_features(top, it.image_top), _png_features(bottom, it.image_bottom)
        x.append([*ft, *fb, ft[0] - fb[0], abs(ft[0] - fb[0]), float(it.image_top < it.image_bottom),
                  int(it.item_id[1:5], 16)])
        y.append(1.0 if it.kind == "attention" else 0.0)
    x, y = np.asarray(x, dtype=float), np.asarray(y)
    assert {(r[1], r[2], r[7], r[8]) for r in x} == {(56.0, 56.0, 56.0, 56.0)}
    auc = _cv_auc(x, y)
    # A separating feature gives an AUC near 1 (checked below); here it stays near chance.
    assert 0.35 <= auc <= 0.65, auc
    leaky = np.c_[x, y + np.random.default_rng(1).normal(0, 0.3, len(y))]
    assert _cv_auc(leaky, y) > 0.9


def test_catch_trial_pages_differ_from_pair_pages_only_in_item_id_and_images(tmp_path):
    from hitgen.items import build_hit_items
    from hitgen.render import render_mturk_page
    from hitgen.texts import HitTexts

    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    items = build_hit_items(run, seed=0, attention_rate=0.5)
    texts = HitTexts.for_domain("digits")
    pages = set()
    for it in items:
        page = render_mturk_page(it, f"IMG-{it.image_top}", f"IMG-{it.image_bottom}", texts)
        page = page.replace(it.item_id, "ITEM")
        page = page.replace(f"IMG-{it.image_top}", "TOP").replace(f"IMG-{it.image_bottom}", "BOTTOM")
        pages.add(page)
    assert len(pages) == 1
    assert {it.kind for it in items} == {"pair", "attention"}


# --------------------------------------------------------------------------- the frozen plan


def test_the_frozen_plan_is_followed_and_overrides_are_loud(tmp_path):
    p = _plant(tmp_path)
    freeze_plan(p.run, p.plan.replace(catch_trials=16))
    res = analyze_file(p.path, options=OPTS)
    assert res.plan_origin == "frozen" and res.overrides == []
    assert res.exclusions.by_rule["too_fast"]["rows"] > 0
    assert not any("catch trial" in n for n in res.notes)     # 16 catch trials, as frozen

    out = invoke("analyze", p.path, "--min-response-time", "0", "--duplicate-participants",
                 "keep", "--n-boot", "0", "--no-gee", "--out", tmp_path / "o")
    assert out.exit_code == 0, out.output
    assert "WARNING: option overrides the frozen plan: min_response_time_s 3.0 -> 0.0" in out.stderr
    assert ("WARNING: option overrides the frozen plan: duplicate_participants 'exclude-later' "
            "-> 'keep'") in out.stderr
    data = json.loads((tmp_path / "o" / "analysis.json").read_text())
    assert {o["field"] for o in data["overrides"]} == {"min_response_time_s",
                                                       "duplicate_participants"}
    assert {r["rule"]: r["pair_judgements"] for r in data["exclusions_by_rule"]}["too_fast"] == 0


def test_changed_hit_items_after_freezing_are_warned_about(tmp_path):
    p = _plant(tmp_path)
    freeze_plan(p.run, p.plan.replace(catch_trials=3))
    res = analyze_file(p.path, options=OPTS)
    assert any("declares 3 catch trial(s) but hit_items.csv holds 16" in n for n in res.notes)


def test_version_1_plans_keep_their_meaning(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"plan_version": 1, "frozen_at": "2026-11-28T16:38:44Z",
                               "plan": {"correction": "holm"}}))
    plan = read_plan_file(old)
    assert plan.correction == "holm" and plan.min_response_time_s == 0
    assert plan.duplicate_participants == "keep" and plan.blocked_participants == ()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"plan_version": 1, "plan": {"min_response_time_s": 2}}))
    with pytest.raises(RunDirError, match="version-1 plan cannot have"):
        read_plan_file(bad)
    for value in (-1, float("nan"), "3", True):
        with pytest.raises(ConfigError, match="min_response_time_s"):
            AnalysisPlan(min_response_time_s=value)
    with pytest.raises(ConfigError, match="blocked_participants"):
        AnalysisPlan(blocked_participants=("ok", " spaced "))


def test_block_lists_as_text_or_prolific_csv(tmp_path):
    text = tmp_path / "ids.txt"
    text.write_text("# pilot\nA1\n\nB2\nA1\n")
    assert quality.read_block_list(text) == ("A1", "B2")
    export = tmp_path / "prolific.csv"
    export.write_text("Submission id,PROLIFIC_PID,Status\ns1,5f0aa,APPROVED\ns2,5f0bb,RETURNED\n")
    assert quality.read_block_list(export) == ("5f0aa", "5f0bb")
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(InputFileError, match="needs a column named worker_id"):
        quality.read_block_list(other)


def test_publish_freezes_the_quality_rules(aws_env, tmp_path, fake):
    run = make_run_dir(tmp_path / "run", pairs_per_cell=2)
    block = tmp_path / "pilot.txt"
    block.write_text("APILOT1\nAPILOT2\n")
    res = invoke("publish", run, *PUBLISH_OPTIONS, "--attention-rate", "0.25",
                 "--min-response-time", "3", "--block-list", block, "--endpoint-url", fake.url)
    assert res.exit_code == 0, res.output
    assert "Analysis plan to freeze before the first HIT" in res.stdout
    assert "less than 3 s (SubmitTime - AcceptTime) is excluded" in res.stdout
    assert "Catch trials: 2 attention-check item(s) among the HITs." in res.stdout
    plan = load_plan(run)
    assert plan.min_response_time_s == 3.0 and plan.catch_trials == 2
    assert plan.blocked_participants == ("APILOT1", "APILOT2")
    # A rerun with other values keeps the frozen plan and says so.
    again = invoke("publish", run, *PUBLISH_OPTIONS, "--min-response-time", "9",
                   "--endpoint-url", fake.url)
    assert again.exit_code == 0, again.output
    assert ("WARNING: the frozen plan keeps min_response_time_s 3.0; the option asking for 9.0 "
            "is ignored") in again.stderr
    assert load_plan(run).min_response_time_s == 3.0


def test_rules_described_as_a_preregistration_states_them():
    lines = quality.describe_rules(AnalysisPlan(min_response_time_s=2.5, catch_trials=10,
                                                blocked_participants=("a", "b")))
    text = "\n".join(lines)
    assert "less than 2.5 s" in text and "2 participant id(s)" in text
    assert "after 2 or more failed checks" in text and "10 attention-check item(s)" in text
    assert len(lines) == len(quality.RULES) + 1   # every rule, the payment rule and catch trials
    rows = quality.rule_table({}, AnalysisPlan(), {})
    assert [r["rule"] for r in rows] == [r.key for r in quality.RULES]


def test_tidy_files_carry_study_ip_hash_and_times(tmp_path):
    rows = ["dag,setting,pair_id,worker_id,preferred,work_time_s,study_id,ip_hash"]
    for i in range(6):
        rows.append(f"a->b,same_source,p{i},W1,cause,10,S1,h1")       # first study
        rows.append(f"a->b,same_source,p{i},W2,effect,10,S1,h1")      # same IP as W1 in S1
        rows.append(f"a->b,same_source,p{i},W3,cause,{1 if i < 2 else 10},S1,h3")
        rows.append(f"a->b,same_source,p{i},W1,effect,10,S2,h9")      # W1 again, later study
    path = tmp_path / "tidy.csv"
    path.write_text("\n".join(rows) + "\n")
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"plan_version": 2,
                                "plan": AnalysisPlan(min_response_time_s=2).to_dict()}))
    res = analyze_file(path, plan_file=plan, options=OPTS)
    got = {k: v["pair_judgements"] for k, v in res.exclusions.by_rule.items() if v["rows"]}
    # Studies start in file order (no submit times): S1 first. W2 shares W1's IP within S1.
    assert got == {"earlier_study": 6, "shared_ip": 6, "too_fast": 2}
    assert (res.table["k"].tolist(), res.table["n"].tolist()) == ([10], [10])
