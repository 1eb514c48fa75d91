"""One study over several processes (docs/distributed.md).

Under torchrun with the gloo backend on the CPU: two processes write the same bytes as one; a rank
that is killed leaves no run directory and the rerun resumes from checkpoints; a rank that hangs
is given up on after the timeout. In-process: the checkpoint store, the work protocol on one
process, and how eq. 9's units are dealt over the ranks.

The torchrun tests start three Python processes each (the agent and two ranks) and take 20-40 s
on a busy 2-core machine; every process runs torch on one thread.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_tamper import rewrite
from tiny_models import ImageStats, make_generator

from cage.compute import checkpoints, distributed
from cage.compute.checkpoints import CheckpointStore
from cage.compute.distributed import Group, Workers
from cage.config.experiment import load_experiment
from cage.engine.variants import ObservationScorer, Probe
from cage.run.pipeline import PRIOR_BLOCK, PriorBlocks, prior_latents, run_experiment
from cage_eval import runs

SUPPORT = Path(__file__).resolve().parents[1] / "support"

#: The files that must be byte-identical whatever the number of processes.
SAME_BYTES = (runs.DIRECTIONS, runs.ALPHA_SWEEP, runs.NULL_DRAWS, runs.PAIRS, runs.CLASSIFIERS)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A researcher's folder (their tiny generator and classifier in src/) and an experiment
    whose labelled samples and eq. 9 work span two prior blocks (4,500 latents) decoded 100 rows
    a call (which does not divide a block), with same-source and same-destination pairs made two
    slots a batch."""
    root = tmp_path_factory.mktemp("dist")
    (root / "src").mkdir()
    shutil.copy(SUPPORT / "tiny_models.py", root / "src" / "my_models.py")
    gen = make_generator()
    with torch.no_grad():
        probs = ImageStats(0.0, 0.0, 1.0)(gen.decode(gen.sample(500, 9)))
    medians = {k: float(torch.logit(v.median())) for k, v in probs.items()}
    sections = {
        "experiment": {"name": "dist", "kind": "generator", "seed": 0},
        "cage": {"pairs": [["bright", "red"]], "alphas": [1.0, 2.0], "alpha": 1.0, "k": 4500,
                 "n_null": 5, "k_null_observation": 60, "mmd_n": 40, "mmd_permutations": 10,
                 "min_accuracy": 0.5, "baselines": False},
        "generator": {"factory": "my_models:make_fragile_generator", "python_path": ["src"],
                      "batch_size": 100},
        "observation_classifier": {"kind": "callable", "callable": "my_models:ImageStats",
                                   "callable_options": {"bright_at": medians["bright"],
                                                        "red_at": medians["red"],
                                                        "sharpness": 40.0}},
        "labels": {"source": "classifier", "n_samples": 4500},
        "pairs": {"n_same_source": 4, "n_same_destination": 4, "dags": ["bright->red"],
                  "alpha_steps": 4, "alpha_growth": 2.0, "sheet_pairs": 4, "batch": 2},
    }
    lines = []
    for name, body in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in body.items()), ""]
    exp = root / "dist.toml"
    exp.write_text("\n".join(lines))
    return exp


@pytest.fixture(scope="module")
def one_process(study, tmp_path_factory):
    """The reference: the study on this process alone, on one torch thread (as torchrun runs each
    of its processes)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_experiment(load_experiment(study), out, cache_dir=out.parent / "cache")
    finally:
        torch.set_num_threads(old)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int, study: Path, out: Path, timeout: float = 240,
             **env: str) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node N -m cage_eval generate -e STUDY --out OUT`` on 127.0.0.1."""
    environ = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    environ.update({"OMP_NUM_THREADS": "1", **env})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "cage_eval", "generate", "-e", str(study), "--out", str(out),
           "--cache-dir", str(out.parent / "cache")]
    return subprocess.run(cmd, env=environ, capture_output=True, text=True, timeout=timeout,
                          cwd=str(out.parent))


def images(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run / runs.IMAGES_DIR).iterdir())}


def assert_same_run(run: Path, reference: Path) -> None:
    for name in SAME_BYTES:
        assert (run / name).read_bytes() == (reference / name).read_bytes(), name
    assert images(run) == images(reference)
    assert len(images(run)) > 8


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.partial"))


# --------------------------------------------------------------------------- torchrun


@pytest.mark.slow
def test_two_processes_write_the_bytes_one_process_writes(study, one_process, tmp_path):
    out = tmp_path / "run"
    res = torchrun(2, study, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_run(out, one_process)
    assert res.stdout.count("dist: run ") == 1  # rank 0 alone reports
    manifest = runs.read_manifest(out)
    work = manifest["distributed"]
    assert (work["world_size"], work["backend"]) == (2, "gloo")
    reference = runs.read_manifest(one_process)["distributed"]
    assert reference["world_size"] == 1 and reference["work"]["score"]["resumed"] == 0
    # The same work, all of it computed, none resumed; the pairs were dealt too.
    assert work["work"]["score"] == reference["work"]["score"]
    assert work["work"]["label"] == reference["work"]["label"]
    assert work["work"]["label"]["units"] == 2 and work["work"]["manipulate"]["units"] > 0
    assert not checkpoints.checkpoint_dir(out).exists()
    assert manifest["pairs"]["stats"] == runs.read_manifest(one_process)["pairs"]["stats"]


@pytest.mark.slow
def test_a_killed_rank_leaves_no_run_and_the_rerun_resumes(study, one_process, tmp_path):
    out = tmp_path / "run"
    res = torchrun(2, study, out, CAGE_TEST_FAULT="kill", CAGE_TEST_FAULT_RANK="1")
    assert res.returncode != 0
    assert "exitcode  : -9" in res.stderr  # rank 1 was SIGKILLed ...
    assert not out.exists() and leftovers(tmp_path, "run") == []  # ... and nothing was published
    saved = sorted(p.name for p in checkpoints.checkpoint_dir(out).iterdir())
    assert {n.split("-")[1] for n in saved} == {"r0", "r1"}  # both ranks' eq. 9 units survive

    res = torchrun(2, study, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert_same_run(out, one_process)
    score = runs.read_manifest(out)["distributed"]["work"]["score"]
    total = runs.read_manifest(one_process)["distributed"]["work"]["score"]
    assert score["units"] == total["units"] and total["decoded"] > 40_000
    assert (score["resumed"], score["computed"], score["decoded"]) == (total["units"], 0, 0)
    label = runs.read_manifest(out)["distributed"]["work"]["label"]
    assert (label["resumed"], label["computed"]) == (2, 0)  # the labelled samples too
    assert not checkpoints.checkpoint_dir(out).exists()


@pytest.mark.slow
def test_a_rerun_discards_forged_checkpoints_and_writes_the_same_bytes(study, one_process,
                                                                      tmp_path):
    """Every checkpoint both ranks left edited (all ones) with its digest forged: the ranks' spot
    checks see it, rank 0 discards every file, tells rank 1 to forget what it read, and the run
    starts over: the same bytes as one process."""
    out = tmp_path / "run"
    res = torchrun(2, study, out, CAGE_TEST_FAULT="kill", CAGE_TEST_FAULT_RANK="1")
    assert res.returncode != 0
    parts = sorted(checkpoints.checkpoint_dir(out).glob("part-*.npz"))
    assert {p.name.split("-")[1] for p in parts} == {"r0", "r1"}
    for path in parts:
        rewrite(path, lambda name, a: np.ones_like(a), forge=True)

    res = torchrun(2, study, out)
    assert res.returncode == 0, res.stdout + res.stderr
    warned = [line for line in res.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warned) == 1 and "differs from its recomputation" in warned[0]
    assert f"all {len(parts)} checkpoint file(s) of this run discarded" in warned[0]
    assert_same_run(out, one_process)
    record = runs.read_manifest(out)["checkpoints"]
    assert record["discarded"] and record["resumed"] == 0
    assert not checkpoints.checkpoint_dir(out).exists()


PROTOCOL = """
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from cage.compute import distributed
from cage.compute.distributed import Workers
from cage_eval.errors import DistributedError

MODE = sys.argv[1]


class Unit:
    def __init__(self, i):
        self.key, self.i = "", i


with distributed.session("cpu") as group:
    def square(unit):
        if unit.i == 5 and MODE == "raise":
            raise ValueError("no fives")
        if unit.i == 5 and MODE == "hang":
            time.sleep(600)
        return {"y": np.array([unit.i ** 2]), "rank": np.array([group.rank])}

    workers = Workers(group)
    workers.register("sq", square)
    if not group.leader:
        workers.follow(lambda: {})
        print(json.dumps({"served": True}), flush=True)
        sys.exit(0)
    try:
        with workers.leading(sys.argv[2]):
            workers.announce_setup(True)
            workers.handshake({})
            workers.start("")
            res = workers.map("sq", [Unit(i) for i in range(7)])
            print(json.dumps({"y": [int(r["y"][0]) for r in res],
                              "ranks": [int(r["rank"][0]) for r in res]}), flush=True)
    except DistributedError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
"""


def protocol(mode: str, tmp_path: Path, timeout: str = "60") -> list[subprocess.Popen]:
    """Two processes that join a gloo group on 127.0.0.1 as torchrun's would, rank 0 mapping
    seven units over both."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.update({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                "OMP_NUM_THREADS": "1", "CAGE_EVAL_DIST_TIMEOUT": timeout})
    return [subprocess.Popen([sys.executable, "-c", PROTOCOL, mode, str(tmp_path / "c")],
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for r in (0, 1)]


def answer(proc: subprocess.Popen, wait: float = 120) -> dict:
    out, err = proc.communicate(timeout=wait)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    assert proc.returncode == 0 and lines, err
    return json.loads(lines[-1])


def test_two_ranks_share_work_and_a_failing_unit_stops_both(tmp_path):
    rank0, rank1 = protocol("ok", tmp_path)
    assert answer(rank0) == {"y": [0, 1, 4, 9, 16, 25, 36], "ranks": [0, 1, 0, 1, 0, 1, 0]}
    assert answer(rank1) == {"served": True}
    rank0, rank1 = protocol("raise", tmp_path)
    assert answer(rank0) == {"error": "rank 1 of 2 failed: ValueError: no fives"}
    assert answer(rank1) == {"served": True}  # rank 0 told it to stop: nobody waits


def test_a_hung_rank_is_given_up_on_after_the_timeout(tmp_path):
    rank0, rank1 = protocol("hang", tmp_path, timeout="3")
    try:
        error = answer(rank0)["error"]
        assert error.startswith("rank 0 of 2: another process of this job stopped or did not "
                                "answer within 3 s (")
        assert error.endswith("; nothing was published, and a rerun of the same command "
                              "resumes from the checkpoints")
    finally:
        rank1.kill()
        rank1.communicate()


# --------------------------------------------------------------------------- in-process


def test_one_process_creates_no_process_group(monkeypatch):
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with distributed.session("cpu") as group:
        assert (group.rank, group.world_size, group.backend, group.leader) == (0, 1, None, True)
        assert not torch.distributed.is_initialized()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: one process
    assert not distributed.launched()
    assert distributed.backend_for("cpu") == "gloo"


def test_the_checkpoint_store_saves_whole_files_and_ignores_broken_ones(tmp_path):
    d = tmp_path / ".run.checkpoints"
    with CheckpointStore(d, rank=3, every=3600) as store:
        store.put("aa", {"x": np.arange(3.0), "red": np.ones(2)})
        assert not d.exists()  # nothing is written before a save is due
        store.put("bb", {"x": np.zeros(1)})
    assert [p.name.split("-")[1] for p in d.iterdir()] == ["r3"]
    (d / "part-r1-broken.npz").write_bytes(b"not a zip file")
    again = CheckpointStore(d)
    assert set(again.get("aa")) == {"x", "red"} and np.array_equal(again.get("aa")["x"],
                                                                   np.arange(3.0))
    assert again.get("cc") is None
    again.close()
    checkpoints.remove(d)
    assert not d.exists()


class Counted:
    """A handler that squares and counts."""

    def __init__(self):
        self.calls = 0

    def __call__(self, unit):
        self.calls += 1
        return {"y": np.array([unit.value ** 2])}


class Unit:
    def __init__(self, key, value):
        self.key, self.value, self.decodes = key, value, 10


def test_work_on_one_process_is_computed_once_and_resumed_after(tmp_path):
    units = [Unit(f"k{i}", float(i)) for i in range(5)]
    first, handler = Workers(store=CheckpointStore(tmp_path / "c")), Counted()
    first.register("sq", handler)
    assert [r["y"][0] for r in first.map("sq", units)] == [0, 1, 4, 9, 16]
    first.store.close()
    assert handler.calls == 5 and first.stats["sq"].computed == 5

    rerun, handler = Workers(store=CheckpointStore(tmp_path / "c")), Counted()
    rerun.register("sq", handler)
    assert [r["y"][0] for r in rerun.map("sq", units + [Unit("k9", 9.0)])] == \
        [0, 1, 4, 9, 16, 81]
    stats = rerun.stats["sq"]
    # One unit computed, and one of the five resumed recomputed and compared (the spot check).
    assert handler.calls == 2 and (stats.resumed, stats.computed, stats.decoded) == (5, 1, 10)
    assert stats.verified == 1


def test_eq9_units_are_dealt_evenly(one_thread):
    """Each unit (a probe on one block) goes to the rank with the fewest rows so far, ties to
    rank block mod W; on one process the outcomes are those of decoding the latents in order."""
    gen = make_generator(latent_dim=4, size=4, channels=1)
    z = prior_latents(gen, PRIOR_BLOCK + 50, 0)

    class Dealer(Workers):
        """Three ranks as far as dealing goes; every unit computed here."""

        def map(self, name, units, owners=None, *, checkpoint=True):
            self.dealt = [(u.block, u.rows, o) for u, o in zip(units, owners, strict=True)]
            here = Workers()
            here.handlers = self.handlers
            return here.map(name, units)

    dealer = Dealer(Group(world_size=3))
    psi = ImageStats(0.5, 0.0)
    scorer = ObservationScorer(gen, psi, 64, PriorBlocks(gen, 0, drawn=z), PRIOR_BLOCK, dealer)
    u = np.ones(4) / 2
    res = scorer.score([Probe(z.shape[0], u, 1.0), Probe(30, u, -1.0), Probe(30, None, 0.0)])
    assert dealer.dealt == [(0, PRIOR_BLOCK, 0), (1, 50, 1), (0, 30, 2), (0, 30, 2)]
    with torch.no_grad():
        direct = psi(gen.decode(z + torch.as_tensor(u, dtype=torch.float32)))["bright"]
    assert np.array_equal(res[0]["bright"], np.asarray(direct, dtype=np.float64))
    assert res[1]["bright"].shape == (30,) and set(res[2]) == {"bright"}
