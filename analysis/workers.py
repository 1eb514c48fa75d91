"""Per-worker summary: how much each worker judged, how fast, and how well on attention checks."""

from __future__ import annotations

import numpy as np
import pandas as pd

WORKER_COLUMNS = (
    "worker_id", "worker_name", "assignments", "pair_judgements", "pair_judgements_kept",
    "attention_answered", "attention_correct", "attention_accuracy", "median_work_time_s",
    "rejected", "excluded",
)


def worker_summary(annotated: pd.DataFrame) -> pd.DataFrame:
    """One row per worker, sorted by judgements (descending) then id.

    Parameters
    ----------
    annotated : every joined row with an ``excluded`` reason column ('' = kept), as returned by
        :func:`analysis.exclusions.apply_exclusions`.

    Notes
    -----
    ``median_work_time_s`` is the median ``WorkTimeInSeconds`` over the worker's assignments
    (NaN when the layout has no times). ``excluded`` names the reason when all of the worker's
    pair judgements were dropped (the attention rule first, then rejection, else the rule that
    removed most of them, e.g. ``blocked participant``).
    """
    df = annotated
    is_pair = (df["kind"] == "pair").to_numpy()
    reason = df["excluded"].to_numpy()
    frame = pd.DataFrame({
        "worker_id": df["worker_id"].to_numpy(),
        "worker_name": df["worker_name"].to_numpy(),
        "pair": is_pair.astype(np.int64),
        "pair_kept": (is_pair & (reason == "")).astype(np.int64),
        "att": (~is_pair).astype(np.int64),
        "att_ok": np.nan_to_num(df["correct"].to_numpy(dtype=float), nan=0.0).astype(np.int64),
        "time": df["work_time_s"].to_numpy(dtype=float),
        "rejected": (reason == "rejected assignment").astype(np.int64),
        "failed": (reason == "attention checks failed").astype(np.int64),
    })
    g = frame.groupby("worker_id", sort=False)
    out = g.agg(
        worker_name=("worker_name", "first"), assignments=("pair", "size"),
        pair_judgements=("pair", "sum"), pair_judgements_kept=("pair_kept", "sum"),
        attention_answered=("att", "sum"), attention_correct=("att_ok", "sum"),
        median_work_time_s=("time", "median"), rejected=("rejected", "sum"),
        failed=("failed", "sum"),
    ).reset_index()
    out["attention_accuracy"] = out["attention_correct"] / out["attention_answered"].where(
        out["attention_answered"] > 0)
    # Any other rule that removed all of a worker's pair judgements (blocked, duplicate
    # participant, too fast, ...): its most common reason.
    dropped = pd.DataFrame({"worker_id": frame["worker_id"], "reason": reason})[
        is_pair & (reason != "")]
    common = (dropped.groupby("worker_id")["reason"].agg(lambda r: r.value_counts().index[0])
              if len(dropped) else pd.Series(dtype=object))
    other = np.array([common.get(w, "") for w in out["worker_id"]], dtype=object)
    all_dropped = ((out["pair_judgements"] > 0) & (out["pair_judgements_kept"] == 0)).to_numpy()
    out["excluded"] = np.where(
        out["failed"] > 0, "attention checks failed",
        np.where(all_dropped & (out["rejected"] > 0).to_numpy(), "rejected",
                 np.where(all_dropped, other, "")))
    out = out.sort_values(["pair_judgements", "worker_id"], ascending=[False, True],
                          kind="stable")
    return out[list(WORKER_COLUMNS)].reset_index(drop=True)
