"""Calibration of the call rules: false-arrow rate and power, on the synthetic ground truth.

Runs the ``synthetic`` experiment (cage/experiments/synthetic.py) through ``run_cage`` over many
seeds in each scenario and counts the calls of both rules, for eq. 8 (latent) and eq. 9
(observation):

- **no mechanism** (every arrow is false): independent attributes; associated and exchangeable
  (cosine 0.5) with both labels balanced, one label rare (10 %), both imbalanced (20 % / 70 %);
- **planted mechanism** ``m1 -> m2`` (an arrow ``->`` is right, ``<-`` wrong): independent base
  scores with balanced labels, with the effect rare, with the cause rare, and a nonlinear score;

each at latent dimensions 16, 128 and 512. The **miscalibrated-judge** scenarios pass the exact
posterior of one attribute through a temperature (``[synthetic] judge_temperature``: the same
decisions and accuracy, probabilities too flat or too sharp), with no mechanism (a sign of delta tau
made by the judge alone is a false arrow) and with a planted ``m1 -> m2``. Target (issue "Can CAGE's arrows be trusted?"): the
controlled rule's false-arrow rate at most 5 % in every no-mechanism scenario. The script prints a
Markdown table (the one in docs/calibration.md) with the Clopper-Pearson 95 % upper bound of every
rate, and exits 1 when the target is missed.

Usage::

    python benchmarks/bench_calibration.py                  # 30 seeds, all scenarios (about an
                                                            # hour on 2 quiet cores)
    python benchmarks/bench_calibration.py --seeds 5 --dims 16 --jobs 2   # a quick look
    python benchmarks/bench_calibration.py --scenarios 8 9 10 11          # miscalibrated judges
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

#: Scenarios: name, whether a mechanism is planted, the [synthetic] section.
SCENARIOS: list[tuple[str, bool, dict]] = [
    ("independent, balanced", False, {"cos": 0.0, "positive_rate": [0.5, 0.5]}),
    ("exchangeable, balanced", False, {"cos": 0.5, "positive_rate": [0.5, 0.5]}),
    ("exchangeable, m2 rare (10 %)", False, {"cos": 0.5, "positive_rate": [0.5, 0.1]}),
    ("exchangeable, both imbalanced (20 % / 70 %)", False,
     {"cos": 0.5, "positive_rate": [0.2, 0.7]}),
    ("m1 -> m2, balanced", True, {"cos": 0.0, "positive_rate": [0.5, 0.5],
                                  "mechanism": "m1->m2", "strength": 2.0}),
    ("m1 -> m2, effect rare (15 %)", True, {"cos": 0.0, "positive_rate": [0.5, 0.15],
                                            "mechanism": "m1->m2", "strength": 2.0}),
    ("m1 -> m2, cause rare (15 %)", True, {"cos": 0.0, "positive_rate": [0.15, 0.5],
                                           "mechanism": "m1->m2", "strength": 2.0}),
    ("m1 -> m2, nonlinear scores", True, {"cos": 0.3, "positive_rate": [0.5, 0.5],
                                          "mechanism": "m1->m2", "strength": 2.0,
                                          "score": "nonlinear", "curvature": 1.0}),
    # Miscalibrated judges: the exact posterior through a temperature (accuracy unchanged).
    ("exchangeable, balanced, m2's judge too flat (T = 4)", False,
     {"cos": 0.5, "positive_rate": [0.5, 0.5], "judge_temperature": [1.0, 4.0]}),
    ("exchangeable, balanced, m1's judge too sharp (T = 0.25)", False,
     {"cos": 0.5, "positive_rate": [0.5, 0.5], "judge_temperature": [0.25, 1.0]}),
    ("m1 -> m2, cause rare, effect's judge too flat (T = 4)", True,
     {"cos": 0.0, "positive_rate": [0.15, 0.5], "mechanism": "m1->m2", "strength": 2.0,
      "judge_temperature": [1.0, 4.0]}),
    ("m1 -> m2, cause rare, cause's judge too flat (T = 4)", True,
     {"cos": 0.0, "positive_rate": [0.15, 0.5], "mechanism": "m1->m2", "strength": 2.0,
      "judge_temperature": [4.0, 1.0]}),
]
#: ``n_null = "auto"``: 79 draws for one pair in two variants at level 0.05 (Bonferroni 0.025).
CAGE = {"pairs": [["m1", "m2"]], "alphas": [0.5, 1.0, 1.5], "alpha": 1.0, "k": 2000,
        "n_null": "auto", "k_null_observation": 800, "mmd_n": 40, "mmd_permutations": 5,
        "outcomes": ["latent", "observation"]}
TARGET = 0.05


@dataclass(frozen=True)
class Job:
    scenario: int
    dim: int
    seed: int


def _run(job: Job) -> tuple[Job, list[tuple[str, str, str]]]:
    """One synthetic run: ``(outcome, paper call, controlled call)`` per outcome variant."""
    import torch

    torch.set_num_threads(1)
    from cage.config.experiment import config_from_dict
    from cage.experiments import synthetic
    from cage.run.pipeline import run_cage

    _, _, section = SCENARIOS[job.scenario]
    raw = {"experiment": {"name": "calibration", "kind": "synthetic", "seed": job.seed},
           "cage": dict(CAGE), "synthetic": {"dim": job.dim, "n": 2000, **section}}
    config = config_from_dict(raw)
    result = run_cage(synthetic.setup(config, cache_dir=None), config)
    return job, [(d.outcome, d.direction_paper, d.direction_controlled) for d in result.directions]


def _upper(hits: int, n: int) -> float:
    """Clopper-Pearson 95 % upper bound of a rate."""
    from scipy.stats import beta

    return 1.0 if hits >= n else float(beta.ppf(0.975, hits + 1, n - hits))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 128, 512])
    parser.add_argument("--jobs", type=int, default=max(1, len(os.sched_getaffinity(0))))
    parser.add_argument("--scenarios", type=int, nargs="+", default=list(range(len(SCENARIOS))),
                        help="indices into SCENARIOS")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [Job(s, d, seed) for s in args.scenarios for d in args.dims for seed in range(args.seeds)]
    started = time.perf_counter()
    counts: dict[tuple[int, int, str, str], dict[str, int]] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for done, (job, calls) in enumerate(pool.map(_run, jobs), 1):
            for outcome, paper, controlled in calls:
                for rule, call in (("paper", paper), ("controlled", controlled)):
                    c = counts.setdefault((job.scenario, job.dim, outcome, rule),
                                          {"->": 0, "<-": 0, "n": 0})
                    c["n"] += 1
                    if call in ("->", "<-"):
                        c[call] += 1
            if done % 20 == 0:
                print(f"  {done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s",
                      file=sys.stderr)
    from cage.config.experiment import auto_n_null

    N_NULL = auto_n_null(2, 0.05)  # noqa: N806
    minutes = (time.perf_counter() - started) / 60
    load = os.getloadavg()[0]
    print(f"{len(jobs)} runs ({args.seeds} seeds per cell), {minutes:.1f} min with {args.jobs} "
          f"workers (load average {load:.1f} at the end); k = {CAGE['k']}, n = 2000, "
          f"{N_NULL} null draws, alpha = 1, each call at level 0.05 / 2 (Bonferroni over "
          "the two outcome variants)\n")
    print("| scenario | d | outcome | paper: false arrows | controlled: false arrows |")
    print("|---|---|---|---|---|")
    missed = []
    for s in args.scenarios:
        name, planted, _ = SCENARIOS[s]
        if planted:
            continue
        for d in args.dims:
            for outcome in ("latent", "observation"):
                cells = []
                for rule in ("paper", "controlled"):
                    c = counts[(s, d, outcome, rule)]
                    hits = c["->"] + c["<-"]
                    cells.append(f"{hits}/{c['n']} = {hits / c['n']:.0%} (≤ {_upper(hits, c['n']):.0%})")
                    if rule == "controlled" and hits / c["n"] > TARGET:
                        missed.append(f"{name}, d = {d}, {outcome}")
                print(f"| {name} | {d} | {outcome} | {cells[0]} | {cells[1]} |")
    print("\n| scenario (planted m1 -> m2) | d | outcome | paper: right / wrong | "
          "controlled: right / wrong |")
    print("|---|---|---|---|---|")
    for s in args.scenarios:
        name, planted, _ = SCENARIOS[s]
        if not planted:
            continue
        for d in args.dims:
            for outcome in ("latent", "observation"):
                cells = []
                for rule in ("paper", "controlled"):
                    c = counts[(s, d, outcome, rule)]
                    cells.append(f"{c['->']}/{c['n']} right, {c['<-']}/{c['n']} wrong")
                print(f"| {name} | {d} | {outcome} | {cells[0]} | {cells[1]} |")
    if missed:
        print(f"\nTARGET MISSED (controlled false-arrow rate > {TARGET:.0%}): " + "; ".join(missed))
        return 1
    print(f"\ntarget met: the controlled rule's false-arrow rate is at most {TARGET:.0%} in every "
          "no-mechanism cell")
    return 0


if __name__ == "__main__":
    sys.exit(main())
