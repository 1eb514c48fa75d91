"""The one seed derivation: stable bytes (a run's seeds are part of its reproducibility), order
independence, and the stage names the pipeline, the generator kind and the labeller use."""

from __future__ import annotations

import hashlib

from cage.engine.seeds import stage_seed
from cage.labels.sampled import block_seed


def _by_hand(text: str) -> int:
    """SHA-256 of the stage's name, first 4 bytes little-endian, 31 bits."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def test_stage_seed_is_the_sha256_of_the_joined_name():
    assert stage_seed(0, "prior", "0") == _by_hand("0:prior:0")
    assert stage_seed(7, "null", "permutation", "thick") == _by_hand("7:null:permutation:thick")
    assert stage_seed(3) == _by_hand("3")


def test_pinned_values_do_not_drift():
    """Changing these changes every run's numbers: the same seed must give the same run."""
    assert stage_seed(0, "prior", "0") == 1116718817
    assert [stage_seed(0, "split", a) for a in ("thick", "bright")] == [1938105856, 1296461788]
    assert all(0 <= stage_seed(s, "x") < 2**31 for s in range(200))


def test_stages_are_independent_and_distinct():
    seeds = {stage_seed(0, "null", kind, a) for kind in ("permutation", "random")
             for a in ("thick", "bright", "round", "wide")}
    assert len(seeds) == 8
    assert stage_seed(0, "a", "b") != stage_seed(0, "b", "a")
    assert stage_seed(0, "mmd") != stage_seed(1, "mmd")


def test_the_generator_kind_and_the_labeller_use_the_same_derivation():
    """They had derivations of their own before; the names kept their bytes, so runs are unchanged."""
    assert stage_seed(5, "generator", "labels") == _by_hand("5:generator:labels")
    assert block_seed(5, 3) == stage_seed(5, "labels", "3") == _by_hand("5:labels:3")
