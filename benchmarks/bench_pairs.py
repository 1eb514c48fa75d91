"""Pair-generation throughput against raw decoding, side by side, at the same batch size.

Pipeline: choose alpha from the latent classifier, decode, quantise, check with the observation
classifier, escalate / replace failures, encode PNGs and write them, build the pairs.csv rows.
Raw: ``generator.decode`` of the same number of latents in batches of the same size. Both run with
one torch thread (as pair generation does, for byte-identical output). Each side is timed
``--repeats`` times, interleaved, and the best time of each is kept (the machine is shared).

Target: counterfactual images per second through the pipeline >= 0.8 x raw decoded images per
second. Exits 1 when missed.

    python benchmarks/bench_pairs.py [--batch 256] [--pairs 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from cage import digits_data
from cage.config import default_cache_dir, load_experiment
from cage.digits_weights import load_or_train
from cage.experiment_digits import parse_options
from cage.generator_vae import deterministic_torch
from cage.images import ImageStore
from cage.pairs import LinearAttribute, PairConfig, PairMaker

TARGET = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--pairs", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
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

    def pipeline() -> tuple[float, int, int]:
        out = Path(tempfile.mkdtemp(prefix="bench-pairs-", dir=args.tmp))
        try:
            with deterministic_torch():
                t0 = time.perf_counter()
                maker = PairMaker(gen, z, data.images, data.attributes, np.arange(len(data)),
                                  models.psi, ImageStore(out / "images"), cfg)
                with maker.store:
                    pairs = maker.same_source(attrs[args.cause], attrs[args.effect], args.pairs,
                                              pool)
                elapsed = time.perf_counter() - t0
            return elapsed, 2 * len(pairs.rows), maker.decoded
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def raw(n: int) -> float:
        latents = torch.as_tensor(z[pool[:n] % len(z)] + 0.5, dtype=torch.float32)
        with deterministic_torch():
            t0 = time.perf_counter()
            for s in range(0, n, args.batch):
                gen.decode(latents[s:s + args.batch])
            return time.perf_counter() - t0

    def write_only(n: int) -> float:
        out = Path(tempfile.mkdtemp(prefix="bench-png-", dir=args.tmp))
        try:
            t0 = time.perf_counter()
            with ImageStore(out) as store:
                for k in range(n):
                    img = data.images[pool[k % len(pool)]].copy()
                    img[0, 0] = k % 251  # distinct files, as the pipeline writes
                    img[0, 1] = k // 251
                    store.add(img)
            return time.perf_counter() - t0
        finally:
            shutil.rmtree(out, ignore_errors=True)

    pipe_times, raw_times, write_times = [], [], []
    produced = decoded = 0
    for _ in range(args.repeats):
        t, produced, decoded = pipeline()
        pipe_times.append(t)
        raw_times.append(raw(produced))
        write_times.append(write_only(produced * 3 // 2))
    pipe_rate = produced / min(pipe_times)
    raw_rate = produced / min(raw_times)
    ratio = pipe_rate / raw_rate
    print(f"batch size {args.batch}, {args.pairs} same-source pairs "
          f"({args.cause}->{args.effect}), {produced} counterfactual images, {decoded} decoded "
          f"(escalations included), best of {args.repeats}")
    print(f"raw decode:     {raw_rate:10.1f} images/s")
    print(f"pair pipeline:  {pipe_rate:10.1f} counterfactual images/s (PNG writing included)")
    print(f"PNG writing alone: {produced * 3 // 2 / min(write_times):10.1f} files/s "
          f"({produced * 3 // 2} files: sources and counterfactuals, as in the pipeline)")
    print(f"ratio: {ratio:.3f} (target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
