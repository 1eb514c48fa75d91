"""Render an :class:`~analysis.report.AnalysisResult` as the paper's Table 2 and write it.

Outputs (:func:`write_outputs`): ``table2.csv`` (one row per DAG and setting, every column),
``table2.md``, ``table2.tex``, ``workers.csv`` and ``analysis.json`` (every number, the plan, the
exclusions and the flags). All are rendered in memory first, so an error leaves no file behind;
then they are staged and renamed into place together (:func:`write_outputs`), with the
permissions any other file the project writes gets. Worker ids and DAG names are escaped for each
format (:mod:`analysis.escaping`): no id can inject a spreadsheet formula, HTML or a LaTeX command,
or change a table's rows and columns.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.coverage import coverage_lines
from analysis.escaping import csv_cell, csv_quoting, latex_text, markdown_cell
from analysis.quality import rule_table
from analysis.report import EXCLUSION_COLUMNS, AnalysisResult
from cage_eval import files
from cage_eval.errors import ConfigError

OUTPUT_FILES = ("table2.csv", "table2.md", "table2.tex", "workers.csv", "analysis.json")

TABLE2_COLUMNS = (
    "dag", "setting", "k", "n", "rate", "p_value", "p_adjusted", "significant", "ci_low",
    "ci_high", "family_size", "pairs", "workers",
    "majority_cause", "majority_pairs", "majority_ties", "majority_p_value",
    "majority_p_adjusted", "majority_significant", "majority_ci_low", "majority_ci_high",
    "gee_rate", "gee_ci_low", "gee_ci_high", "gee_p_value", "gee_correlation",
    "pair_boot_ci_low", "pair_boot_ci_high", "worker_boot_ci_low", "worker_boot_ci_high",
    "fleiss_kappa", "randolph_kappa", "kappa_pairs", "kappa_raters",
    "top_chosen", "position_n", "position_p_value", "simulated", *EXCLUSION_COLUMNS,
)

_CORRECTION_NAMES = {"bonferroni": "Bonferroni", "holm": "Holm", "none": "no correction"}


# --------------------------------------------------------------------------- formatting


def fmt_p(p: float) -> str:
    """p-values: 3 significant digits, scientific below 0.001."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    if p < 1e-300:
        return "<1e-300"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def fmt_f(x: float, digits: int = 3) -> str:
    """A float with fixed digits, ``-`` for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def fmt_ci(lo: float, hi: float) -> str:
    """``[0.718, 0.816]``, ``-`` when undefined."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo, hi)):
        return "-"
    return f"[{lo:.3f}, {hi:.3f}]"


def star(sig: bool) -> str:
    return "*" if bool(sig) else ""


def caption(result: AnalysisResult) -> str:
    """One sentence saying what the numbers are."""
    p = result.plan
    fam = "within each setting's DAGs" if p.family == "setting" else "over all DAG x setting cells"
    corr = _CORRECTION_NAMES[p.correction]
    where = "" if p.correction == "none" else f" after {corr} correction {fam}"
    return (f"Judgements preferring the cause-manipulated image / all judgements; exact two-sided "
            f"binomial test against {p.null_p:g}; * = significant at {p.alpha:g}{where}; "
            f"{p.confidence_level:.0%} Clopper-Pearson intervals.")


def _grid(table: pd.DataFrame) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    dags = list(dict.fromkeys(table["dag"].tolist()))
    settings = list(dict.fromkeys(table["setting"].tolist()))
    cells = {(r.dag, r.setting): f"{r.k}/{r.n}{star(r.significant)}"
             for r in table.itertuples(index=False)}
    return dags, settings, cells


def _headline_rows(table: pd.DataFrame) -> list[list[str]]:
    return [[r.setting, r.dag, f"{r.k}/{r.n}{star(r.significant)}", fmt_f(r.rate),
             fmt_ci(r.ci_low, r.ci_high), fmt_p(r.p_value), fmt_p(r.p_adjusted),
             str(r.pairs), str(r.workers)] for r in table.itertuples(index=False)]


HEADLINE_HEAD = ["setting", "DAG", "cause/n", "rate", "95% CI", "p", "p adj", "pairs", "workers"]
ROBUST_HEAD = ["setting", "DAG", "majority", "p adj", "GEE rate [CI]", "GEE p", "rho",
               "pair-boot CI", "worker-boot CI", "kappa F/R", "top", "pos p"]
#: The terminal shows the robustness columns in two narrower tables.
_ROBUST_SPLIT = 7


def _robust_rows(table: pd.DataFrame) -> list[list[str]]:
    rows = []
    for r in table.itertuples(index=False):
        ties = f" ({r.majority_ties} tied)" if r.majority_ties else ""
        gee = "-" if math.isnan(r.gee_rate) else f"{r.gee_rate:.3f} {fmt_ci(r.gee_ci_low, r.gee_ci_high)}"
        top = "-" if r.position_n == 0 else f"{r.top_chosen}/{r.position_n}"
        rows.append([
            r.setting, r.dag,
            f"{r.majority_cause}/{r.majority_pairs}{star(r.majority_significant)}{ties}",
            fmt_p(r.majority_p_adjusted), gee, fmt_p(r.gee_p_value), fmt_f(r.gee_correlation, 2),
            fmt_ci(r.pair_boot_ci_low, r.pair_boot_ci_high),
            fmt_ci(r.worker_boot_ci_low, r.worker_boot_ci_high),
            f"{fmt_f(r.fleiss_kappa, 2)}/{fmt_f(r.randolph_kappa, 2)}", top,
            fmt_p(r.position_p_value),
        ])
    return rows


def _text_table(head: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def plan_lines(result: AnalysisResult) -> list[str]:
    """Where the plan came from and every override, loudly."""
    p = result.plan
    desc = (f"test {p.test}, correction {p.correction}, family {p.family}, alpha {p.alpha:g}, "
            f"attention rule: exclude workers below {p.attention_min_accuracy:.0%} accuracy, "
            f"exclude rejected: {'yes' if p.exclude_rejected else 'no'}, "
            f"repeat judgements: {p.duplicates}, minimum response time: "
            + (f"{p.min_response_time_s:g} s" if p.min_response_time_s > 0 else "none")
            + f", duplicate participants: {p.duplicate_participants}, blocked participants: "
            f"{len(p.blocked_participants)}, fair rejection after {p.reject_min_failed_checks} "
            "failed check(s), catch trials: "
            + ("not recorded" if p.catch_trials is None else str(p.catch_trials)))
    if result.plan_origin == "frozen":
        head = f"Analysis plan: frozen in the run at {result.plan_frozen_at} ({desc})"
    elif result.plan_origin == "file":
        head = f"Analysis plan: from the plan file given ({desc})"
    else:
        head = f"Analysis plan: no frozen plan found; defaults used ({desc})"
    lines = [head]
    for name, before, after in result.overrides:
        lines.append(f"WARNING: option overrides the {'frozen ' if result.plan_origin != 'default' else ''}"
                     f"plan: {name} {_short(before)} -> {_short(after)}")
    return lines


def _short(value: Any) -> str:
    """A plan value for a warning line (long lists as a count)."""
    if isinstance(value, tuple) and len(value) > 3:
        return f"{len(value)} ids"
    return repr(list(value) if isinstance(value, tuple) else value)


EXCLUSION_HEAD = ["rule", "threshold", "participants", "pair judgements"]


def exclusion_rows(result: AnalysisResult) -> list[list[str]]:
    """The "exclusions by rule" table beside Table 2: one row per rule, in the order applied,
    then the total."""
    ex = result.exclusions
    rows = rule_table(ex.by_rule, result.plan, ex.participants_by_rule)
    out = [[r["label"], str(r["threshold"]), str(r["participants"]), str(r["pair_judgements"])]
           for r in rows]
    dropped = sum(int(r["pair_judgements"]) for r in rows)
    out.append(["analysed", f"of {ex.pair_rows_in} read", "", str(ex.pair_rows_in - dropped)])
    return out


def exclusion_lines(result: AnalysisResult) -> list[str]:
    """The exclusions and flags, one line each."""
    ex = result.exclusions
    out = [f"Judgements: {ex.pair_rows_in} pair judgements and {ex.attention_rows_in} attention "
           f"items read; {ex.pair_rows_out} pair judgements analysed."]
    if ex.duplicate_assignments:
        out.append(f"Flag: {len(ex.duplicate_assignments)} row(s) repeat an assignment id "
                   f"({ex.duplicate_assignment_conflicts} with conflicting answers); first kept "
                   f"(e.g. line {ex.duplicate_assignments[0][0]}).")
    if ex.rejected_rows:
        verb = "kept (plan)" if ex.rejected_kept else "excluded"
        out.append(f"Rejected assignments: {ex.rejected_rows} {verb} "
                   f"({ex.rejected_pair_rows} pair judgements).")
    if ex.attention_workers_checked:
        out.append(f"Attention checks: {ex.attention_workers_checked} worker(s) checked, "
                   f"{len(ex.attention_failed_workers)} excluded, {ex.attention_dropped_rows} "
                   f"pair judgement(s) dropped; {ex.attention_workers_unchecked} worker(s) "
                   "without checks kept.")
    if ex.blocked_participants:
        out.append(f"Blocked participants: {len(ex.blocked_participants)} excluded "
                   f"({ex.by_rule['blocked_participant']['pair_judgements']} pair judgements).")
    if ex.earlier_study:
        out.append(f"Duplicate participants: {len({p for p, _, _ in ex.earlier_study})} "
                   "participant(s) answered in more than one study of the run (e.g. "
                   f"{ex.earlier_study[0][0]} in {ex.earlier_study[0][1]} after "
                   f"{ex.earlier_study[0][2]}); "
                   f"{ex.by_rule['earlier_study']['pair_judgements']} later pair judgement(s) "
                   "excluded.")
    if ex.shared_ip:
        out.append(f"Duplicate participants: {len(ex.shared_ip)} participant(s) share a hashed "
                   "IP address with an earlier participant of the same study; "
                   f"{ex.by_rule['shared_ip']['pair_judgements']} pair judgement(s) excluded.")
    if ex.too_fast_rows:
        out.append(f"Too fast: {ex.too_fast_rows} assignment(s) by {len(ex.too_fast_workers)} "
                   f"worker(s) answered in less than {result.plan.min_response_time_s:g} s; "
                   f"{ex.by_rule['too_fast']['pair_judgements']} pair judgement(s) excluded.")
    if ex.repeat_judgements:
        out.append(f"Flag: {len(ex.repeat_judgements)} judgement(s) by a worker who judged the "
                   f"same pair more than once; {ex.repeat_dropped_rows} later one(s) dropped "
                   f"(e.g. line {ex.repeat_judgements[0][0]}).")
    if result.join.unknown_items:
        out.append(f"Flag: {len(result.join.unknown_items)} row(s) name an item not in the run; "
                   f"set aside (e.g. line {result.join.unknown_items[0][0]}).")
    if result.join.item_echo_mismatch:
        out.append(f"Flag: {len(result.join.item_echo_mismatch)} row(s) whose Answer.item_id "
                   f"differs from Input.item_id; set aside (e.g. line "
                   f"{result.join.item_echo_mismatch[0][0]}).")
    out.extend(f"Note: {n}" for n in result.notes)
    return out


def overall_line(result: AnalysisResult) -> str:
    o = result.overall
    pos = ("-" if o["position_n"] == 0 else
           f"{o['top_chosen']}/{o['position_n']} chose the top image (p {fmt_p(o['position_p_value'])})")
    return (f"Overall: {o['judgements']} judgements, {o['pairs']} pairs, {o['workers']} workers; "
            f"Fleiss' kappa {fmt_f(o['fleiss_kappa'], 3)}, Randolph's kappa "
            f"{fmt_f(o['randolph_kappa'], 3)} ({o['kappa_pairs']} pairs x {o['kappa_raters']}); "
            f"position: {pos}.")


def render_text(result: AnalysisResult) -> str:
    """The terminal report."""
    table = result.table
    dags, settings, cells = _grid(table)
    grid_rows = [[d, *(cells.get((d, s), "-") for s in settings)] for d in dags]
    robust = _robust_rows(table)
    parts = [
        *_banner(result),
        f"{result.source} ({result.fmt}"
        + (f", run {result.run_id}" if result.run_id else "") + ")",
        *plan_lines(result), "",
        _wrap("Table 2. " + caption(result)), "",
        _text_table(["DAG", *settings], grid_rows, set(range(1, len(settings) + 1))), "",
        _text_table(HEADLINE_HEAD, _headline_rows(table), {2, 3, 5, 6, 7, 8}), "",
        "Exclusions by rule (pre-registered; applied in this order):",
        _text_table(EXCLUSION_HEAD, exclusion_rows(result), {2, 3}), "",
        _wrap("Robustness (clustered judgements): majority vote per pair, exact binomial over "
              "untied pairs, same correction; GEE with exchangeable within-pair correlation "
              "(rho), robust SE, Wald test."),
        _text_table(ROBUST_HEAD[:_ROBUST_SPLIT], [r[:_ROBUST_SPLIT] for r in robust], {2, 3, 5, 6}),
        "",
        _wrap("Cluster-bootstrap 95% CIs resampling pairs and workers; Fleiss'/Randolph's kappa; "
              "position bias: judgements choosing the top image, exact binomial vs 0.5, "
              "uncorrected."),
        _text_table(ROBUST_HEAD[:2] + ROBUST_HEAD[_ROBUST_SPLIT:],
                    [r[:2] + r[_ROBUST_SPLIT:] for r in robust], {4, 5, 6}), "",
        _wrap(overall_line(result)), *map(_wrap, exclusion_lines(result)),
        *coverage_lines(result.coverage), *_banner(result),
    ]
    return "\n".join(parts) + "\n"


def _banner(result: AnalysisResult) -> list[str]:
    """The simulated-data banner as text lines (none for real answers)."""
    return [] if result.banner is None else ["!" * 100, _wrap("!! " + result.banner), "!" * 100]


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, subsequent_indent="  ", break_on_hyphens=False)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[markdown_cell(c) for c in row] for row in rows]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *("| " + " | ".join(r) + " |" for r in esc)])


def render_markdown(result: AnalysisResult) -> str:
    """``table2.md``."""
    table = result.table
    dags, settings, cells = _grid(table)
    grid = _md_table(["DAG", *settings], [[d, *(cells.get((d, s), "-") for s in settings)]
                                          for d in dags])
    return "\n\n".join([
        *([] if result.banner is None else [f"> **{result.banner}**"]),
        "# Table 2", caption(result), grid,
        "## Exclusions by rule", "Pre-registered in the analysis plan; applied in this order, "
        "each judgement counted under the first rule that excludes it.",
        _md_table(EXCLUSION_HEAD, exclusion_rows(result)),
        "## Per cell", _md_table(HEADLINE_HEAD, _headline_rows(table)),
        "## Robustness", _md_table(ROBUST_HEAD, _robust_rows(table)),
        "## Plan and exclusions", "\n".join(f"- {x}" for x in
                                           [*plan_lines(result), overall_line(result),
                                            *exclusion_lines(result)]),
        *(["## Coverage", "```\n" + "\n".join(coverage_lines(result.coverage)) + "\n```"]
          if result.coverage is not None else []),
    ]) + "\n"


def render_latex(result: AnalysisResult) -> str:
    """``table2.tex``: a booktabs table like the paper's Table 2, plus a per-cell detail table."""
    table = result.table
    dags, settings, _ = _grid(table)
    by = {(r.dag, r.setting): r for r in table.itertuples(index=False)}

    def cell(d: str, s: str) -> str:
        r = by.get((d, s))
        return "--" if r is None else f"{r.k}/{r.n}" + ("$^{*}$" if r.significant else "")

    banner = "" if result.banner is None else latex_text(result.banner) + " "
    lines = [
        *([] if result.banner is None else [f"% {result.banner}"]),
        "% Generated by cage-eval analyze. Requires \\usepackage{booktabs}.",
        "\\begin{table}[t]", "\\centering",
        "\\begin{tabular}{l" + "r" * len(settings) + "}", "\\toprule",
        "DAG & " + " & ".join(latex_text(s.replace("_", " ")) for s in settings) + " \\\\",
        "\\midrule",
        *(f"{latex_text(d)} & " + " & ".join(cell(d, s) for s in settings) + " \\\\" for d in dags),
        "\\bottomrule", "\\end{tabular}",
        f"\\caption{{{banner}{latex_text(caption(result))}}}", "\\label{tab:cage-human-eval}",
        "\\end{table}", "",
        "\\begin{table}[t]", "\\centering", "\\small",
        "\\begin{tabular}{llrrlrrrl}", "\\toprule",
        "Setting & DAG & Cause/$n$ & Rate & 95\\% CI & $p$ & $p_{adj}$ & Majority & GEE $p$ \\\\",
        "\\midrule",
    ]
    for r in table.itertuples(index=False):
        lines.append(" & ".join([
            latex_text(r.setting.replace("_", " ")), latex_text(r.dag),
            f"{r.k}/{r.n}" + ("$^{*}$" if r.significant else ""), fmt_f(r.rate),
            fmt_ci(r.ci_low, r.ci_high), fmt_p(r.p_value), fmt_p(r.p_adjusted),
            f"{r.majority_cause}/{r.majority_pairs}" + ("$^{*}$" if r.majority_significant else ""),
            fmt_p(r.gee_p_value)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{{banner}Per-cell detail and robustness checks (majority vote per pair; "
              "GEE with exchangeable within-pair correlation).}", "\\end{table}", ""]
    lines += ["\\begin{table}[t]", "\\centering", "\\small",
              "\\begin{tabular}{llrr}", "\\toprule",
              "Rule & Threshold & Participants & Pair judgements \\\\", "\\midrule"]
    rows = exclusion_rows(result)
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("\\midrule")
        lines.append(" & ".join(latex_text(c) for c in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}",
              f"\\caption{{{banner}Exclusions by rule, pre-registered in the analysis plan and "
              "applied in this order (each judgement counted under the first rule that "
              "excludes it).}", "\\end{table}", ""]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) or math.isinf(float(value)) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


def to_json(result: AnalysisResult) -> dict:
    """Every number of the analysis as a JSON-ready dict."""
    cells = result.table[list(TABLE2_COLUMNS)].to_dict(orient="records")
    return _clean({
        "source": {"file": result.source.name, "format": result.fmt, "run_id": result.run_id},
        "plan": result.plan.to_dict(),
        "plan_origin": result.plan_origin,
        "plan_frozen_at": result.plan_frozen_at,
        "overrides": [{"field": f, "plan": a, "used": b} for f, a, b in result.overrides],
        "options": {"n_boot": result.options.n_boot, "random_state": result.options.random_state,
                    "gee": result.options.gee, "drop_unknown": result.options.drop_unknown},
        "cells": cells,
        "overall": result.overall,
        "exclusions": result.exclusions.to_dict(),
        "exclusions_by_rule": rule_table(result.exclusions.by_rule, result.plan,
                                         result.exclusions.participants_by_rule),
        "flags": {
            "unknown_items": [{"line": ln, "id": i} for ln, i in result.join.unknown_items],
            "item_echo_mismatch": [{"line": ln, "answer_item_id": i}
                                   for ln, i in result.join.item_echo_mismatch],
        },
        "notes": result.notes,
        "simulated": {"judgements": result.simulated, "of": result.judgements,
                      "banner": result.banner},
        "coverage": None if result.coverage is None else result.coverage.to_dict(),
        "workers": result.workers.to_dict(orient="records"),
    })


def table2_frame(result: AnalysisResult) -> pd.DataFrame:
    """The ``table2.csv`` frame."""
    return result.table[list(TABLE2_COLUMNS)].copy()


#: Text columns of the CSV outputs: what a results file or run can put there.
TEXT_COLUMNS = ("dag", "setting", "worker_id", "worker_name", "excluded")


def _csv(frame: pd.DataFrame) -> str:
    """A frame as CSV with its text columns escaped (:func:`analysis.escaping.csv_cell`)."""
    frame = frame.copy()
    text = [c for c in TEXT_COLUMNS if c in frame.columns]
    for column in text:
        frame[column] = frame[column].map(csv_cell)
    quoting = csv_quoting(v for c in text for v in frame[c].tolist())
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.10g", quoting=quoting)


def render_outputs(result: AnalysisResult) -> dict[str, str]:
    """Every output file's text, keyed by file name."""
    import json

    return {
        "table2.csv": _csv(table2_frame(result)),
        "table2.md": render_markdown(result),
        "table2.tex": render_latex(result),
        "workers.csv": _csv(result.workers),
        "analysis.json": json.dumps(to_json(result), indent=2, sort_keys=True,
                                    allow_nan=False) + "\n",
    }


def write_outputs(result: AnalysisResult, out_dir: str | Path) -> list[Path]:
    """Render everything, then write all files into ``out_dir``; return their paths.

    Every file is first written and synced under a temporary name in ``out_dir``; only when all
    of them are on disk are they renamed into place (:func:`cage_eval.files.atomic_write_many`),
    so a failure (bad directory, full disk) leaves none of the outputs, old or new, half-written.
    They get the mode an ordinary file gets under the umask, like every other output.
    """
    texts = render_outputs(result)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory; choose a directory")
    created = not out_dir.exists()
    try:
        return files.atomic_write_many(out_dir, {name: texts[name].encode("utf-8")
                                                 for name in OUTPUT_FILES})
    except OSError as exc:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise ConfigError(f"--out {out_dir}: cannot write the outputs ({exc.strerror or exc}); "
                          "choose a writable directory") from None
