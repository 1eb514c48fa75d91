"""Speed of ``cage-eval analyze`` against pandas reading the same file, measured side by side.

Target (issue: analysis): one million judgements analysed in at most 10x the time
``pandas.read_csv`` takes just to read the same CSV. The analysed path is the whole command
minus click: read and validate the file, join with ``hit_items.csv``, exclusions, headline tests
and corrections, majority vote, GEE, pair and worker cluster bootstraps (2,000 draws each per
cell), kappas, position test, per-worker summary, rendering and atomic writing of all outputs.

The input is a synthetic run: ``judgements / 3`` pairs in 4 DAGs x 2 settings, 3 judgements per
pair from a pool of workers, 5% attention items, in ``cage-eval collect``'s ``results.csv`` layout
(``cage_eval.runs.RESULTS_COLUMNS``). The two timings alternate (``--repeats`` rounds); the best of
each is compared. Exit status 1 when the ratio exceeds ``--max-ratio``.

Usage::

    python benchmarks/bench_analysis.py                   # 1,000,000 judgements
    python benchmarks/bench_analysis.py --judgements 100000 --repeats 3
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.report import AnalysisOptions, analyze_file
from analysis.tables import write_outputs
from cage_eval import files, runs

DAGS = ("thick->bright", "slant->thick", "width->slant", "bright->width")
RUN_ID = "0123456789abcdef"


def build_run(root: Path, judgements: int, seed: int = 0) -> Path:
    """Write manifest.json, hit_items.csv and results.csv for ``judgements`` judgements."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    run.mkdir(parents=True)
    files.atomic_write_json(run / runs.MANIFEST, {"run_id": RUN_ID, "schema_version": 1,
                                                 "complete": True})
    n_items = -(-judgements // 3)
    n_att = n_items // 20
    n_pairs = n_items - n_att
    cell = np.arange(n_pairs) % (len(DAGS) * 2)
    cause_top = rng.random(n_pairs) < 0.5
    items = pd.DataFrame({
        "item_id": [f"h{i:015x}" for i in range(n_items)],
        "kind": ["pair"] * n_pairs + ["attention"] * n_att,
        "pair_id": [f"p{i:07d}" for i in range(n_pairs)] + [""] * n_att,
        "dag": [DAGS[c // 2] for c in cell] + [""] * n_att,
        "setting": [runs.SETTINGS[c % 2] for c in cell] + [""] * n_att,
        "image_top": [f"{i:016x}.png" for i in range(n_items)],
        "image_bottom": [f"{i + n_items:016x}.png" for i in range(n_items)],
        "role_top": np.where(cause_top, "cause", "effect").tolist() + ["clean"] * n_att,
        "role_bottom": np.where(cause_top, "effect", "cause").tolist() + ["corrupt"] * n_att,
        "expected": [""] * n_pairs + ["top"] * n_att,
    }, columns=list(runs.HIT_ITEMS_COLUMNS))
    items.to_csv(run / runs.HIT_ITEMS, index=False, lineterminator="\n")

    item = np.repeat(np.arange(n_items), 3)[:judgements]
    n = len(item)
    workers = rng.integers(0, max(50, n // 500), size=n)
    is_pair = item < n_pairs
    p_cause = np.where(cell[np.minimum(item, n_pairs - 1)] % 3 == 0, 0.6, 0.5)
    prefers_cause = rng.random(n) < p_cause
    top_role_is_cause = np.concatenate([cause_top, np.zeros(n_att, bool)])[item]
    choice = np.where(is_pair, np.where(prefers_cause == top_role_is_cause, "top", "bottom"),
                      np.where(rng.random(n) < 0.97, "top", "bottom"))
    item_ids = items["item_id"].to_numpy()[item]
    const = {c: "" for c in runs.RESULTS_COLUMNS}
    const.update({"HITTypeId": "3TYPE0000000000000000000000", "Title": "Which image looks more real?",
                  "Description": "Pick the more realistic image", "Keywords": "image, realism",
                  "Reward": "$0.05", "CreationTime": "Sat Nov 28 16:00:00 UTC 2026",
                  "MaxAssignments": "3", "RequesterAnnotation": runs.REQUESTER_ANNOTATION_PREFIX + RUN_ID,
                  "AssignmentDurationInSeconds": "600", "AutoApprovalDelayInSeconds": "259200",
                  "Expiration": "Sat Dec 05 16:00:00 UTC 2026", "LifetimeInSeconds": "604800",
                  "AssignmentStatus": "Approved", "AcceptTime": "Sat Nov 28 16:38:00 UTC 2026",
                  "SubmitTime": "Sat Nov 28 16:38:44 UTC 2026",
                  "AutoApprovalTime": "Tue Dec 01 16:38:44 UTC 2026",
                  "ApprovalTime": "Sat Nov 28 18:00:00 UTC 2026",
                  "LifetimeApprovalRate": "100% (12/12)", "Last30DaysApprovalRate": "100% (12/12)",
                  "Last7DaysApprovalRate": "100% (12/12)", "Input.run_id": RUN_ID})
    frame = pd.DataFrame({c: const[c] for c in runs.RESULTS_COLUMNS}, index=pd.RangeIndex(n))
    frame["HITId"] = pd.Series(item).map("3HIT{:016d}".format)
    frame["AssignmentId"] = pd.Series(np.arange(n)).map("3ASG{:016d}".format)
    frame["WorkerId"] = pd.Series(workers).map("A{:012d}".format)
    frame["WorkTimeInSeconds"] = rng.integers(4, 120, size=n).astype(str)
    frame["Input.item_id"] = item_ids
    frame["Input.image_top"] = items["image_top"].to_numpy()[item]
    frame["Input.image_bottom"] = items["image_bottom"].to_numpy()[item]
    frame["Answer.choice"] = choice
    frame["Answer.item_id"] = item_ids
    frame["Answer.elapsed_ms"] = rng.integers(4000, 120000, size=n).astype(str)
    frame.to_csv(run / runs.RESULTS, index=False, lineterminator="\n")
    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judgements", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--max-ratio", type=float, default=10.0)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--no-gee", action="store_true")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    try:
        t = time.perf_counter()
        run = build_run(root, args.judgements)
        path = run / runs.RESULTS
        size_mb = path.stat().st_size / 2**20
        print(f"built {args.judgements:,} judgements ({size_mb:.0f} MiB) in "
              f"{time.perf_counter() - t:.1f} s")
        options = AnalysisOptions(n_boot=args.n_boot, gee=not args.no_gee)
        read_times, analyze_times = [], []
        for _ in range(args.repeats):
            gc.collect()
            t = time.perf_counter()
            df = pd.read_csv(path)
            read_times.append(time.perf_counter() - t)
            rows = len(df)
            del df
            gc.collect()
            t = time.perf_counter()
            result = analyze_file(path, options=options)
            write_outputs(result, root / "out")
            analyze_times.append(time.perf_counter() - t)
        judged = int(result.table["n"].sum())
        read_s, analyze_s = min(read_times), min(analyze_times)
        ratio = analyze_s / read_s
        print(f"pandas.read_csv: {read_s:.2f} s ({rows:,} rows)")
        print(f"analyze (all outputs, GEE {'off' if args.no_gee else 'on'}, "
              f"bootstrap {args.n_boot} draws): {analyze_s:.2f} s ({judged:,} pair judgements)")
        print(f"ratio {ratio:.2f} (target <= {args.max_ratio:g}): "
              f"{'OK' if ratio <= args.max_ratio else 'MISSED'}")
        return 0 if ratio <= args.max_ratio else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
