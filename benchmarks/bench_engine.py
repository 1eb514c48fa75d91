"""Speed and memory of the CAGE engine, as ratios measured side by side in one run.

Targets (issue "CAGE engine"):

1. ``closed``: latent-classifier CAGE on k = 100,000 latents of dimension 512, 20 alpha values,
   100 random-direction null draws, GATE in both directions: the closed form
   (:func:`cage.engine.effects.gate_from_logits`) at least 200x faster than a straightforward Algorithm 1
   that materialises ``z +- alpha u`` and calls scikit-learn's ``predict_proba`` for every alpha and
   direction; peak extra memory of the closed form at most 2x the latent matrix (measured as the
   growth of the process's peak resident set size in a fresh subprocess).
Fast sides are timed several times (``REPEATS``) and the medians are compared, because the
machine may be shared.

2. ``refit``: 100 label-permutation refits, n = 30,000, d = 512: batched refits
   (:func:`cage.engine.classifiers.fit_logreg_batched`, as :func:`cage.engine.nulls.permutation_normals` runs
   them) at least 10x faster than a loop of scikit-learn ``LogisticRegression`` fits, with held-out
   log-loss within 1%.
3. ``mog``: ``cage-eval generate --experiment mog`` (training included, empty cache) under 300 s.

The straightforward side of (1) costs about 0.3 s per (alpha, direction) evaluation on 2 cores, so
4,040 of them would take about 20 minutes; by default a random subset of ``--baseline-evals`` of
them is timed (each evaluation is the same work) and the total is extrapolated linearly; the
script says so in its output. ``--full`` times them all. The scikit-learn loop of (2) is run in full.

Usage::

    python benchmarks/bench_engine.py                 # all three
    python benchmarks/bench_engine.py --only closed   # one of closed, refit, mog

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

K, D, N_ALPHAS, N_NULL = 100_000, 512, 20, 100
#: Each fast side is timed this many times and the median reported (the machine may be shared).
REPEATS = 3
N_REFIT, N_ROWS = 100, 30_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _latents(k: int, d: int, seed: int) -> np.ndarray:
    """k x d float32 standard normals, generated in blocks (no float64 copy of the matrix)."""
    rng = np.random.default_rng(seed)
    z = np.empty((k, d), dtype=np.float32)
    for start in range(0, k, 10_000):
        z[start:start + 10_000] = rng.standard_normal((min(10_000, k - start), d), dtype=np.float32)
    return z


def _classifiers(z: np.ndarray, seed: int):
    """Two scikit-learn logistic regressions on planted attributes (fitted on 5,000 rows)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    d = z.shape[1]
    a = rng.standard_normal(d)
    b = 0.6 * a + 0.8 * rng.standard_normal(d)
    sub = z[:5000].astype(np.float64)
    out = []
    for w, scale in ((a, 2.0), (b, 1.0)):
        w = w / np.linalg.norm(w)
        y = (rng.random(5000) < 1 / (1 + np.exp(-scale * 2 * sub @ w))).astype(int)
        out.append(LogisticRegression(max_iter=2000).fit(sub, y))
    return out


def closed_form_child(seed: int) -> dict:
    """Runs in a fresh subprocess: closed-form CAGE and its peak extra memory."""
    import torch

    from cage.engine.classifiers import logits_of
    from cage.engine.effects import gate_from_logits
    from cage.engine.nulls import random_directions

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    z = _latents(K, D, seed)
    c1, c2 = _classifiers(z, seed)
    alphas = np.linspace(0.1, 2.0, N_ALPHAS)
    # Warm up the kernels on a small slice, so one-time allocations are not counted.
    gate_from_logits(logits_of(z[:100], c2.coef_[0], 0.0), np.ones(3), alphas[:2])
    before_current, before_peak = _rss_bytes(), _peak_rss_bytes()
    times = []
    for _repeat in range(REPEATS):
        start = time.perf_counter()
        out = {}
        for name, treat, outcome in (("12", c1, c2), ("21", c2, c1)):
            w_e, b_e = outcome.coef_[0], float(outcome.intercept_[0])
            h = treat.coef_[0] / np.linalg.norm(treat.coef_[0])
            dirs = np.vstack([h, random_directions(N_NULL, D, seed + int(name))])
            logits = logits_of(z, w_e, b_e)  # the one pass over the latent matrix
            out[name] = gate_from_logits(logits, dirs @ w_e, alphas)  # (alphas, 1 + nulls)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    after_peak = _peak_rss_bytes()
    extra = max(0, after_peak - before_current)
    return {"seconds": seconds, "extra_bytes": extra, "latent_bytes": z.nbytes,
            "peak_before": before_peak, "gates": {k: v.tolist() for k, v in out.items()}}


def bench_closed(seed: int, baseline_evals: int, full: bool) -> bool:
    from cage.engine.nulls import random_directions

    env = dict(os.environ)
    proc = subprocess.run([sys.executable, __file__, "--child-closed", str(seed)], env=env,
                          capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    z = _latents(K, D, seed)
    c1, c2 = _classifiers(z, seed)
    alphas = np.linspace(0.1, 2.0, N_ALPHAS)
    evals = []
    for name, treat in (("12", c1), ("21", c2)):
        h = treat.coef_[0] / np.linalg.norm(treat.coef_[0])
        dirs = np.vstack([h, random_directions(N_NULL, D, seed + int(name))])
        for ia in range(N_ALPHAS):
            for j in range(N_NULL + 1):
                evals.append((name, ia, j, dirs[j]))
    total = len(evals)
    rng = np.random.default_rng(seed)
    chosen = range(total) if full else rng.choice(total, size=min(baseline_evals, total),
                                                  replace=False)
    worst = 0.0
    per_eval = []
    for i in chosen:
        start = time.perf_counter()
        name, ia, j, u = evals[i]
        outcome = c2 if name == "12" else c1
        alpha = alphas[ia]
        z_plus = z + (alpha * u).astype(np.float32)  # materialised counterfactual latents
        p_plus = outcome.predict_proba(z_plus)[:, 1]
        del z_plus
        z_minus = z - (alpha * u).astype(np.float32)
        p_minus = outcome.predict_proba(z_minus)[:, 1]
        del z_minus
        gate = float(np.mean(p_plus - p_minus))
        per_eval.append(time.perf_counter() - start)
        worst = max(worst, abs(gate - child["gates"][name][ia][j]))
    measured = float(np.sum(per_eval))
    n_timed = len(chosen)
    baseline = float(np.median(per_eval)) * total
    ratio = baseline / child["seconds"]
    mem_ratio = child["extra_bytes"] / child["latent_bytes"]
    print(f"[closed] k={K} d={D} alphas={N_ALPHAS} random nulls={N_NULL}, both directions: "
          f"{total} (alpha, direction) evaluations")
    print(f"[closed] closed form (median of {REPEATS}): {child['seconds']:.2f} s, peak extra memory "
          f"{child['extra_bytes'] / 2**20:.0f} MiB = {mem_ratio:.2f}x the latent matrix "
          f"({child['latent_bytes'] / 2**20:.0f} MiB)")
    how = "all" if n_timed == total else f"{n_timed} randomly chosen, extrapolated linearly to {total}"
    print(f"[closed] straightforward Algorithm 1 ({how}, median evaluation time x {total}): "
          f"{measured:.1f} s measured, {baseline:.0f} s for all")
    print(f"[closed] max |closed - materialised| GATE over the timed evaluations: {worst:.2e}")
    ok = ratio >= 200 and mem_ratio <= 2.0 and worst <= 1e-5
    print(f"[closed] speed-up {ratio:.0f}x (target >= 200x), memory {mem_ratio:.2f}x (target <= 2x)"
          f": {'PASS' if ok else 'FAIL'}")
    return ok


def bench_refit(seed: int) -> bool:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from cage.engine.classifiers import fit_logreg_batched
    from cage.engine.nulls import permutation_labels

    rng = np.random.default_rng(seed)
    z = _latents(N_ROWS + 10_000, D, seed)
    w = rng.standard_normal(D)
    w *= 3 / np.linalg.norm(w)
    y_all = (rng.random(z.shape[0]) < 1 / (1 + np.exp(-(z.astype(np.float64) @ w)))).astype(int)
    x, x_test = z[:N_ROWS], z[N_ROWS:]
    labels = permutation_labels(y_all[:N_ROWS], N_REFIT, seed)
    # Held-out labels: each permuted regression is scored on a permutation of the held-out labels
    # (what it was trained to predict: the base rate and nothing else).
    test_labels = permutation_labels(y_all[N_ROWS:], N_REFIT, seed + 1)

    batched_times, loop_times = [], []
    for _repeat in range(REPEATS):
        start = time.perf_counter()
        coef, intercept = fit_logreg_batched(x, labels, tol=1e-5, dtype=torch.float32)
        batched_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sk = [LogisticRegression().fit(x, labels[:, b]) for b in range(N_REFIT)]
        loop_times.append(time.perf_counter() - start)
    batched, loop = float(np.median(batched_times)), float(np.median(loop_times))

    def probs(c, b0):
        return 1 / (1 + np.exp(-(x_test.astype(np.float64) @ c + b0)))

    ll_batched = np.mean([log_loss(test_labels[:, b], probs(coef[b], intercept[b]), labels=[0, 1])
                          for b in range(N_REFIT)])
    ll_sk = np.mean([log_loss(test_labels[:, b], m.predict_proba(x_test)[:, 1], labels=[0, 1])
                     for b, m in enumerate(sk)])
    cos = np.mean([coef[b] @ m.coef_[0] / np.linalg.norm(coef[b]) / np.linalg.norm(m.coef_[0])
                   for b, m in enumerate(sk)])
    rel = abs(ll_batched - ll_sk) / ll_sk
    ratio = loop / batched
    ok = ratio >= 10 and rel <= 0.01
    print(f"[refit] n={N_ROWS} d={D} refits={N_REFIT} (medians of {REPEATS} alternating runs): "
          f"batched {batched:.2f} s, scikit-learn loop {loop:.2f} s -> {ratio:.1f}x (target >= 10x)")
    print(f"[refit] held-out log-loss batched {ll_batched:.5f} vs scikit-learn {ll_sk:.5f} "
          f"({100 * rel:.3f}% apart, target <= 1%); mean cos(normals) {cos:.4f}: "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def bench_mog() -> bool:
    exe = Path(sys.executable).with_name("cage-eval")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CAGE_EVAL_CACHE=str(Path(tmp) / "cache"))
        start = time.perf_counter()
        proc = subprocess.run([str(exe), "generate", "--experiment", "mog", "--out",
                               str(Path(tmp) / "run")], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr)
        print("[mog] FAIL: generate exited with", proc.returncode)
        return False
    ok = seconds < 300
    print(f"[mog] cage-eval generate --experiment mog, empty cache (training included): "
          f"{seconds:.0f} s (target < 300 s): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child-closed":
        print(json.dumps(closed_form_child(int(sys.argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["closed", "refit", "mog"], action="append")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-evals", type=int, default=12,
                        help="straightforward evaluations timed in (1) before extrapolating")
    parser.add_argument("--full", action="store_true", help="time every straightforward evaluation")
    args = parser.parse_args()
    which = args.only or ["closed", "refit", "mog"]
    results = []
    if "closed" in which:
        results.append(bench_closed(args.seed, args.baseline_evals, args.full))
    if "refit" in which:
        results.append(bench_refit(args.seed))
    if "mog" in which:
        results.append(bench_mog())
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
