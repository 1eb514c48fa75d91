"""Benchmark: concurrent vs one-at-a-time publishing of 1,400 HITs to a local MTurk endpoint.

Both runs publish the same 1,400 HIT items with the real code path (``mturk.publish``: ledger
writes before and after each call, deterministic request tokens, botocore retries) to the local
MTurk-protocol server of the test suite (``tests/support/fake_mturk.py``) with 50 ms latency per request
and 10% of requests answered ``ThrottlingException``. The first run uses one thread, the second
``--concurrency`` threads. It prints both times and the ratio, checks that each run created
exactly one HIT per item (zero duplicates), and exits non-zero if the speed-up is below
``--target`` (8x) or any duplicate or missing HIT is found.

    python benchmarks/bench_publish.py                 # 1,400 HITs, 32 threads
    python benchmarks/bench_publish.py --hits 200      # a quicker look
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from crowd_fixtures import make_run_dir  # noqa: E402
from fake_mturk import FakeMTurk  # noqa: E402

from mturk.aws import make_client  # noqa: E402
from mturk.environments import SANDBOX  # noqa: E402
from mturk.hits import HitSettings  # noqa: E402
from mturk.ledger import CREATED, Ledger  # noqa: E402
from mturk.publish import _ITEM_ID, PublishRequest, prepare, publish  # noqa: E402

DAGS = (("thick", "bright"), ("slant", "thick"), ("bright", "slant"), ("width", "height"),
        ("height", "width"), ("thick", "slant"), ("slant", "bright"))


def one_run(run: Path, *, concurrency: int, latency: float, throttle: float, retry_mode: str,
            seed: int) -> tuple[float, int, int, Counter]:
    """Publish ``run`` once; return (seconds, HITs on the server, duplicates, fault counts)."""
    settings = HitSettings(reward="0.05", assignments=3, lifetime_s=3 * 86400, duration_s=600,
                           auto_approve_s=3 * 86400)
    with FakeMTurk(latency_s=latency, throttle_rate=throttle, seed=seed, max_lifetime_s=1800) as fake:
        client = make_client(endpoint_url=fake.url, retry_mode=retry_mode,
                             max_pool_connections=concurrency)
        plan = prepare(run, PublishRequest(settings=settings, concurrency=concurrency), SANDBOX)
        start = time.perf_counter()
        report = publish(plan, client)
        elapsed = time.perf_counter() - start
        per_item = Counter(_ITEM_ID.findall(h["Question"])[0] for h in fake.hits.values())
        with Ledger.open(run) as ledger:
            recorded = ledger.counts()[CREATED]
        if report.created_total != len(plan.items) or recorded != len(plan.items):
            raise SystemExit(f"run with {concurrency} thread(s) left HITs missing: "
                             f"{report.created_total}/{len(plan.items)}, ledger {recorded}")
        duplicates = sum(c - 1 for c in per_item.values())
        missing = len(plan.items) - len(per_item)
        return elapsed, len(fake.hits), duplicates + missing, fake.faults


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=1400, help="HITs to publish (default 1400)")
    parser.add_argument("--concurrency", type=int, default=32, help="threads of the fast run")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--throttle", type=float, default=0.10, help="share of throttled requests")
    parser.add_argument("--retry-mode", default="standard", choices=["standard", "adaptive"])
    parser.add_argument("--target", type=float, default=8.0, help="required speed-up")
    args = parser.parse_args()

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKIABENCHMARKDUMMY01")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark-dummy-secret")

    per_cell = -(-args.hits // (len(DAGS) * 2))
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    try:
        base = make_run_dir(work / "base", dags=DAGS, pairs_per_cell=per_cell)
        if per_cell * len(DAGS) * 2 != args.hits:  # trim pairs.csv to exactly --hits rows
            lines = (base / "pairs.csv").read_text().splitlines(keepends=True)
            (base / "pairs.csv").write_text("".join(lines[: args.hits + 1]))
        seq_run, par_run = work / "sequential", work / "concurrent"
        shutil.copytree(base, seq_run)
        shutil.copytree(base, par_run)
        print(f"Publishing {args.hits} HITs to a local MTurk endpoint: {args.latency * 1000:.0f} ms "
              f"latency, {args.throttle:.0%} of requests throttled, retry mode {args.retry_mode}")
        t_par, n_par, dup_par, f_par = one_run(par_run, concurrency=args.concurrency,
                                               latency=args.latency, throttle=args.throttle,
                                               retry_mode=args.retry_mode, seed=1)
        print(f"  {args.concurrency} threads:  {t_par:8.2f} s  ({n_par} HITs, {dup_par} duplicates, "
              f"{f_par['throttle']} throttled requests)")
        t_seq, n_seq, dup_seq, f_seq = one_run(seq_run, concurrency=1, latency=args.latency,
                                               throttle=args.throttle, retry_mode=args.retry_mode,
                                               seed=1)
        print(f"  1 thread:    {t_seq:8.2f} s  ({n_seq} HITs, {dup_seq} duplicates, "
              f"{f_seq['throttle']} throttled requests)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = t_seq / t_par
    print(f"Speed-up: {ratio:.1f}x (target >= {args.target:g}x)")
    ok = ratio >= args.target and dup_par == 0 and dup_seq == 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
