"""The bars of the long loops count images, move batch by batch and know their total (so that a
terminal shows a count and an ETA): labelling decoded samples, eq. 9's decoding and scoring, and
the pair images of each DAG and setting, on one process."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tiny_models import make_generator

from cage.engine.variants import ObservationScorer, Probe
from cage.labels.sampled import label_prior_samples
from cage_eval import progress
from tests.pairs.test_make import A, B, make


class Recorder:
    """A reporter that keeps every bar: total, description, unit and the updates it got."""

    def __init__(self) -> None:
        self.bars: list[dict] = []

    @contextlib.contextmanager
    def stage(self, name):
        yield

    @contextlib.contextmanager
    def bar(self, total, desc, unit):
        record = {"total": total, "desc": desc, "unit": unit, "updates": []}
        self.bars.append(record)

        class _Bar:
            def update(self, n=1):
                record["updates"].append(n)

        yield _Bar()

    def note(self, text):
        pass


def _psi(x: torch.Tensor) -> dict[str, np.ndarray]:
    m = x.mean(dim=(1, 2, 3)).double().numpy()
    return {"bright": m, "red": x[:, 0].mean(dim=(1, 2)).double().numpy()}


def test_labelling_moves_one_bar_of_images_batch_by_batch():
    rec = Recorder()
    with progress.use(rec):
        got = label_prior_samples(make_generator(latent_dim=4, size=8), _psi, 10, 0, batch=4,
                                  keep_images=True)
    (bar,) = rec.bars
    assert bar["unit"] == "image" and bar["total"] == 10 and bar["updates"] == [4, 4, 2]
    assert "labelling" in bar["desc"]
    assert got.images is not None and got.images.shape == (10, 8, 8, 3)
    assert got.images.dtype == np.uint8


def test_eq9_scoring_counts_images_not_units():
    gen = make_generator(latent_dim=4, size=8)
    z = torch.randn(12, 4, generator=torch.Generator().manual_seed(0))
    scorer = ObservationScorer(gen, _psi, 5, lambda block: z, block_size=12)
    rec = Recorder()
    with progress.use(rec):
        scorer.score([Probe(12, np.eye(4)[0], 0.5, ("bright",)), Probe(7, None, 0.0, None)])
    (bar,) = rec.bars
    assert bar["unit"] == "image" and bar["total"] == 19
    assert bar["updates"] == [5, 5, 2, 5, 2] and sum(bar["updates"]) == 19


def test_pair_making_shows_the_images_it_decodes_per_dag_and_setting(tmp_path):
    maker, _, _, pool = make(tmp_path, batch=8)
    rec = Recorder()
    with progress.use(rec):
        maker.same_source(A, B, 10, pool)
        maker.same_destination(A, B, 6, pool)
    maker.store.close()
    assert [b["total"] for b in rec.bars] == [20, 12]
    assert all(b["unit"] == "image" for b in rec.bars)
    assert "same-source" in rec.bars[0]["desc"] and "same-destination" in rec.bars[1]["desc"]
    for b in rec.bars:  # at least two decodes per pair, in several steps
        assert sum(b["updates"]) >= b["total"] and len(b["updates"]) >= 2
    assert sum(sum(b["updates"]) for b in rec.bars) == maker.decoded
