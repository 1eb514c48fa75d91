"""Pair-generation throughput against raw decoding, side by side, at the same batch size.

Pipeline (all timed): choose alpha from the latent classifier, decode, quantise, check with the
observation classifier, escalate / replace failures, name (hash), encode and write the PNGs of the
sources and counterfactuals, build the pairs.csv rows, and wait until every file is written.
Raw: ``generator.decode`` of as many latents as the pipeline made counterfactual images (its
escalation decodes are extra work it is charged for), in batches of the same size. Every decode on
both sides runs on the calling thread with one torch thread, as pair generation does (for
byte-identical output); the pipeline also checks on a helper thread and writes PNGs on a writer
thread, overlapping the decoding, but never decodes in parallel.

Each repetition times the two side by side (their order alternates) and gives one ratio; the
median ratio over ``--repeats`` repetitions is the result, so a burst of load from other processes
on a shared machine spoils one repetition, not the comparison.

The directories written are removed only after the last repetition: without a journal, ext4 skips
inodes freed in the last minute or more when it allocates new ones, so deleting thousands of files
makes the next thousands of creations crawl (measured: 20 us -> 130-1,000 us per file, all of it in
the kernel's ``recently_deleted``). A real run writes into a fresh directory and deletes nothing.

Target: counterfactual images per second through the pipeline >= 0.8 x raw decoded images per
second. Exits 1 when missed.

    python benchmarks/bench_pairs.py [--batch 256] [--pairs 1024] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cage.compute.runtime import deterministic_torch
from cage.config.experiment import default_cache_dir, load_experiment
from cage.experiments.digits import data as digits_data
from cage.experiments.digits.kind import parse_options
from cage.experiments.digits.models import load_or_train
from cage.pairs.images import ImageStore
from cage.pairs.make import LinearAttribute, PairConfig, PairMaker

TARGET = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cause", default="thick")
    parser.add_argument("--effect", default="bright")
    parser.add_argument("--cache-dir", default=str(default_cache_dir()))
    parser.add_argument("--tmp", default=None,
                        help="Directory for the images written (default: the system temp dir)")
    args = parser.parse_args()

    options = parse_options(load_experiment("digits"))
    data = digits_data.load(options.models.data, args.cache_dir)
    models = load_or_train(options.models, data, args.cache_dir)
    gen = models.generator
    gen.batch_size = args.batch
    with deterministic_torch():
        z = gen.encode(torch.as_tensor(data.float_images())).numpy()
    attrs = {}
    for name in (args.cause, args.effect):
        clf = LogisticRegression(max_iter=1000).fit(z, data.attributes[name])
        attrs[name] = LinearAttribute(name, clf.coef_[0], float(clf.intercept_[0]))
    pool = np.random.default_rng(0).permutation(len(data))
    cfg = PairConfig(batch=args.batch)

    written: list[Path] = []  # removed at the end (see the module docstring)

    def fresh(prefix: str) -> Path:
        written.append(Path(tempfile.mkdtemp(prefix=prefix, dir=args.tmp)))
        return written[-1]

    def pipeline() -> tuple[float, int, int]:
        out = fresh("bench-pairs-")
        with deterministic_torch():
            t0 = time.perf_counter()
            maker = PairMaker(gen, z, data.images, data.attributes, np.arange(len(data)),
                              models.psi, ImageStore(out / "images"), cfg)
            with maker.store:
                pairs = maker.same_source(attrs[args.cause], attrs[args.effect], args.pairs, pool)
            elapsed = time.perf_counter() - t0
        return elapsed, 2 * len(pairs.rows), maker.decoded

    def raw(n: int) -> float:
        latents = torch.as_tensor(z[pool[:n] % len(z)] + 0.5, dtype=torch.float32)
        with deterministic_torch():
            t0 = time.perf_counter()
            for s in range(0, n, args.batch):
                gen.decode(latents[s:s + args.batch])
            return time.perf_counter() - t0

    def write_only(n: int) -> float:
        out = fresh("bench-png-")
        t0 = time.perf_counter()
        with ImageStore(out) as store:
            for k in range(n):
                img = data.images[pool[k % len(pool)]].copy()
                img[0, 0] = k % 251  # distinct files, as the pipeline writes
                img[0, 1] = k // 251
                store.add(img)
        return time.perf_counter() - t0

    ratios, pipe_rates, raw_rates = [], [], []
    try:
        _, produced, decoded = pipeline()  # warm-up: first-call costs of torch and the threads
        for rep in range(args.repeats):
            if rep % 2:
                t_pipe, produced, decoded = pipeline()
                t_raw = raw(produced)
            else:
                t_raw = raw(produced)
                t_pipe, produced, decoded = pipeline()
            ratios.append(t_raw / t_pipe)
            pipe_rates.append(produced / t_pipe)
            raw_rates.append(produced / t_raw)
        n_files = produced * 3 // 2
        write_rate = n_files / write_only(n_files)
    finally:
        for out in written:
            shutil.rmtree(out, ignore_errors=True)
    ratio = statistics.median(ratios)
    print(f"batch size {args.batch}, {args.pairs} same-source pairs "
          f"({args.cause}->{args.effect}), {produced} counterfactual images, {decoded} decoded "
          f"(escalations included), {args.repeats} repetitions side by side, medians")
    print(f"raw decode:        {statistics.median(raw_rates):10.1f} images/s")
    print(f"pair pipeline:     {statistics.median(pipe_rates):10.1f} counterfactual images/s "
          "(PNG writing included)")
    print(f"PNG writing alone: {write_rate:10.1f} files/s ({n_files} files: sources and "
          "counterfactuals, as in the pipeline; once, after the repetitions)")
    print("ratio per repetition: " + " ".join(f"{r:.3f}" for r in ratios))
    print(f"ratio: {ratio:.3f} (median; target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
