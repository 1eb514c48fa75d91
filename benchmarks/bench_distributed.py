"""Speed-up of eq. 9's observation-space scoring on 2 processes (torchrun, gloo) over 1.

The step timed is :meth:`cage.engine.variants.ObservationScorer.score` on the probes one eq. 9 variant
of one pair asks for (the alpha sweep in both directions and both signs over the k prior latents,
the two null-k statistics, ``n_null`` draws of the permutation, random and rotation nulls over
``k_null`` latents, and the factual outcomes), decoded by a 32x32 RGB stand-in decoder (a small
transposed-convolution network with random weights) and read by a stand-in classifier. Each
configuration runs under ``torchrun --nproc-per-node N`` in fresh processes, one torch thread each;
only the scoring step is timed (rank 0's wall clock, from the moment every rank is ready), not
start-up. Runs alternate between 1 and N processes so that both see the same background load;
the ratio is the ratio of the medians. Every run's outcomes are digested, and the digests of 1 and
N processes must be equal (the same bytes whatever the number of processes).

The machine's load average is printed with every run: on a shared machine the ratio says as much
about the other jobs as about cage-eval. With two cores the ideal is 2x; rank 0 also plans the
units and receives every result, so expect less.

Usage::

    python benchmarks/bench_distributed.py                 # 1 vs 2 processes, 3 runs each
    python benchmarks/bench_distributed.py --procs 4 --device cuda   # a 4-GPU node (NCCL)

Exit status 1 when the outcomes of 1 and N processes differ, or when N processes are slower than
one (ratio < 1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time

LATENT_DIM = 32


def _child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from cage.compute import distributed
    from cage.compute.distributed import Workers
    from cage.engine.variants import ObservationScorer, Probe
    from cage.generators.base import gaussian_sample
    from cage.run.pipeline import PRIOR_BLOCK, PriorBlocks, prior_latents

    torch.set_num_threads(1)
    torch.manual_seed(0)
    device = torch.device(args.device)
    net = torch.nn.Sequential(
        torch.nn.Linear(LATENT_DIM, 64 * 4 * 4), torch.nn.Unflatten(1, (64, 4, 4)),
        torch.nn.ConvTranspose2d(64, 32, 4, 2, 1), torch.nn.ReLU(),   # 8x8
        torch.nn.ConvTranspose2d(32, 16, 4, 2, 1), torch.nn.ReLU(),   # 16x16
        torch.nn.ConvTranspose2d(16, 3, 4, 2, 1), torch.nn.Sigmoid(),  # 32x32
    ).eval()

    class StandIn:
        latent_dim = LATENT_DIM
        batch_size = 128

        def __init__(self) -> None:
            self.net = net.to(device if device.type == "cpu" else "cuda")

        def sample(self, n, seed):
            return gaussian_sample(n, LATENT_DIM, seed)

        def decode(self, z):
            return self.net(z.to(next(self.net.parameters()).device)).cpu()

    def psi(x):  # two attributes read from the images: mean red and mean blue intensity
        red, blue = x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))
        return {"red": torch.sigmoid(20 * (red - 0.5)).numpy(),
                "blue": torch.sigmoid(20 * (blue - 0.5)).numpy()}

    with distributed.session(args.device) as group:
        gen = StandIn()
        workers = Workers(group)
        if not group.leader:
            workers.follow(lambda: (ObservationScorer(gen, psi, gen.batch_size,
                                                      PriorBlocks(gen, 0), PRIOR_BLOCK,
                                                      workers), {})[1])
            return
        z = prior_latents(gen, args.k, 0)
        scorer = ObservationScorer(gen, psi, gen.batch_size, PriorBlocks(gen, 0, drawn=z),
                                   PRIOR_BLOCK, workers)
        workers.announce_setup(True)
        workers.handshake({})
        workers.start("")  # no checkpoints: every run computes everything
        rng = np.random.default_rng(0)
        u1, u2 = (v / np.linalg.norm(v) for v in rng.standard_normal((2, LATENT_DIM)))
        gates = [(args.k, u, attr, al) for u, attr in ((u1, "blue"), (u2, "red"))
                 for al in (1.0, 2.0)]
        gates += [(args.k_null, u1, "blue", 1.0), (args.k_null, u2, "red", 1.0)]
        for _ in range(3 * args.n_null):  # permutation, random and rotation nulls
            d = rng.standard_normal((2, LATENT_DIM))
            gates += [(args.k_null, d[0] / np.linalg.norm(d[0]), "blue", 1.0),
                      (args.k_null, d[1] / np.linalg.norm(d[1]), "red", 1.0)]
        probes = [Probe(n, u, s * al, (a,)) for n, u, a, al in gates for s in (1, -1)]
        start = time.perf_counter()
        res = scorer.score(probes, factual=args.k)
        seconds = time.perf_counter() - start
        workers.stop("done")
        digest = hashlib.sha256()
        for r in [*res, scorer.factual(args.k)]:
            for name in sorted(r):
                digest.update(name.encode() + r[name].tobytes())
        print(json.dumps({"seconds": seconds, "digest": digest.hexdigest()[:16],
                          "decodes": scorer.workers.stats["score"].decoded}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(procs: int, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), __file__, "--child",
           "--k", str(args.k), "--n-null", str(args.n_null), "--k-null", str(args.k_null),
           "--device", args.device]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    return {**json.loads(line), "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=2048, help="prior latents")
    parser.add_argument("--n-null", type=int, default=10, help="draws per null kind")
    parser.add_argument("--k-null", type=int, default=200, help="latents behind each null draw")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, a GPU each)")
    args = parser.parse_args()
    if args.child:
        _child(args)
        return 0
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    runs: dict[int, list[dict]] = {1: [], args.procs: []}
    for i in range(args.repeats):
        for procs in (1, args.procs):
            r = _run(procs, args)
            runs[procs].append(r)
            print(f"run {i + 1}, {procs} process(es): {r['seconds']:.2f} s for {r['decodes']} "
                  f"decodes (load average {r['load']:.1f}), outcomes {r['digest']}")
    one = statistics.median(r["seconds"] for r in runs[1])
    many = statistics.median(r["seconds"] for r in runs[args.procs])
    same = len({r["digest"] for rs in runs.values() for r in rs}) == 1
    ratio = one / many
    print(f"[scoring] 1 process {one:.2f} s, {args.procs} processes {many:.2f} s -> "
          f"{ratio:.2f}x (ideal {args.procs}x); outcomes identical: {'yes' if same else 'NO'}")
    return 0 if same and ratio >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
