"""Peak memory of eq. 9 (decode and classify every counterfactual) does not grow with k.

The pipeline decodes ``batch_size`` latents at a time (cage/engine/variants.py ``ObservationScorer``), so
no ``k x image`` tensor is ever held: what grows with ``k`` is only the ``(k, d)`` prior latents
and a few float64 numbers per latent. This benchmark runs ``run_cage`` (eq. 9 only) with a
64x64 RGB stand-in decoder (a small transposed-convolution network with random weights) and a
stand-in observation classifier, at k = 10,000 and k = 100,000, each in a fresh subprocess, and
compares their peak resident set sizes.

Target (issue "Bring your own generator"): peak RSS at k = 100,000 within 20 % of k = 10,000.
For scale: 100,000 decoded 64x64 RGB images in float32 would be 4.9 GB.

Usage::

    python benchmarks/bench_memory.py            # both sizes, prints the ratio; exit 1 if missed
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

LATENT_DIM = 32
TARGET = 1.2


def _child(k: int) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from cage.config.experiment import config_from_dict
    from cage.experiments.base import ExperimentSetup
    from cage.generators.base import gaussian_sample
    from cage.run.pipeline import run_cage

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(LATENT_DIM, 64 * 4 * 4), torch.nn.Unflatten(1, (64, 4, 4)),
        torch.nn.ConvTranspose2d(64, 32, 4, 2, 1), torch.nn.ReLU(),   # 8x8
        torch.nn.ConvTranspose2d(32, 16, 4, 2, 1), torch.nn.ReLU(),   # 16x16
        torch.nn.ConvTranspose2d(16, 8, 4, 2, 1), torch.nn.ReLU(),    # 32x32
        torch.nn.ConvTranspose2d(8, 3, 4, 2, 1), torch.nn.Sigmoid(),  # 64x64
    ).eval()

    class StandIn:
        latent_dim = LATENT_DIM
        batch_size = 256

        def sample(self, n, seed):
            return gaussian_sample(n, LATENT_DIM, seed)

        def decode(self, z):
            return net(z)

    def psi(x):  # two attributes read from the images: mean red and mean blue intensity
        red, blue = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
        return {"a": torch.sigmoid(40 * (red - red.median())).numpy(),
                "b": torch.sigmoid(40 * (blue - blue.median())).numpy()}

    rng = np.random.default_rng(0)
    z_data = rng.standard_normal((2000, LATENT_DIM))
    labels = {"a": (z_data[:, 0] > 0).astype(int), "b": (z_data[:, 0] + z_data[:, 1] > 0).astype(int)}
    config = config_from_dict({
        "experiment": {"name": "memory", "kind": "standin", "seed": 0},
        "cage": {"pairs": [["a", "b"]], "alphas": [1.0], "alpha": 1.0, "k": k, "n_null": 2,
                 "nulls": ["random"], "null": "random", "outcomes": ["observation"],
                 "k_null_observation": 500, "mmd_n": 50, "mmd_permutations": 2,
                 "baselines": False}})
    setup = ExperimentSetup(generator=StandIn(), data_latents=z_data, attributes=labels,
                            observation_classifier=psi)
    started = time.perf_counter()
    result = run_cage(setup, config)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"k": k, "peak_rss": peak, "seconds": seconds, "decoded": result.decoded,
                      "latents_bytes": k * LATENT_DIM * 4}))


def main() -> int:
    rows = []
    for k in (10_000, 100_000):
        proc = subprocess.run([sys.executable, __file__, "--child", str(k)], capture_output=True,
                              text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"k = {r['k']:>7,}: peak RSS {r['peak_rss'] / 2**20:7.1f} MiB, {r['decoded']:,} "
              f"images decoded in {r['seconds']:.0f} s, prior latents {r['latents_bytes'] / 2**20:.1f} MiB")
    ratio = rows[1]["peak_rss"] / rows[0]["peak_rss"]
    images = rows[1]["k"] * 3 * 64 * 64 * 4
    print(f"peak RSS ratio k = 100,000 / k = 10,000: {ratio:.3f} (target <= {TARGET}); holding "
          f"the 100,000 decoded images would take {images / 2**30:.1f} GiB")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
    else:
        sys.exit(main())
