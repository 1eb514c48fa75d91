"""Caches are untrusted: a truncated, pickled or tampered dataset, weights bundle or flow is
rebuilt after a warning, never loaded and never executed; the CLI shows the warning as one line."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cage.experiments.digits import data as digits_data
from cage.experiments.digits import models as digits_models
from cage.experiments.digits.obs_classifier import ObsClassifierConfig
from cage.generators.vae import VAEConfig
from cage_eval.cli import CageGroup
from cage_eval.errors import CacheWarning

SMALL = digits_data.DigitsConfig(n_digits=24, draws=1)


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def built():
    return digits_data.build(SMALL)


def _same(a: digits_data.DigitsDataset, b: digits_data.DigitsDataset) -> bool:
    return (np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
            and all(np.array_equal(a.attributes[k], b.attributes[k]) for k in a.attributes))


def _cache_file(cache: Path) -> Path:
    return cache / f"digits-{SMALL.key()}.npz"


@pytest.mark.parametrize("damage", ["truncated", "pickled", "wrong shape", "not a zip"])
def test_a_bad_dataset_cache_is_rebuilt_after_a_warning(tmp_path, built, damage):
    cache = tmp_path / "cache"
    path = _cache_file(cache)
    digits_data.load(SMALL, cache)
    good = path.read_bytes()
    marker = tmp_path / "executed"
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "pickled":
        np.savez(path, images=np.array([Payload(marker)], dtype=object))
    elif damage == "wrong shape":
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["images"] = arrays["images"][:, :10]
        np.savez(path, **arrays)
    else:
        path.write_text("#!/bin/sh\nrm -rf ~\n")
    with pytest.warns(CacheWarning, match=f"{path}: unusable dataset cache"):
        data = digits_data.load(SMALL, cache)
    assert _same(data, built) and not marker.exists()
    assert path.read_bytes() == good                                  # rewritten, valid again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _same(digits_data.load(SMALL, cache), built)           # and used silently


# --------------------------------------------------------------------------- weights bundle


@pytest.fixture(scope="module")
def tiny(built):
    configs = digits_models.ModelConfigs(
        data=SMALL, vae=VAEConfig(epochs=1, max_steps=2, batch_size=8),
        obs=ObsClassifierConfig(epochs=1, max_steps=2, batch_size=8))
    return configs


def _train_into(cache: Path, configs, data) -> Path:
    models = digits_models.load_or_train(configs, data, cache)
    assert models.origin == "trained"
    return digits_models.cache_bundle_dir(cache, configs)


@pytest.mark.parametrize("damage", ["pickle with its checksum", "checksum", "shape", "nan"])
def test_a_tampered_weights_bundle_is_retrained_never_executed(tmp_path, tiny, built, damage):
    cache = tmp_path / "cache"
    bundle = _train_into(cache, tiny, built)
    meta_path = bundle / digits_models.META_FILE
    meta = json.loads(meta_path.read_text())
    marker = tmp_path / "executed"
    obs = bundle / digits_models.OBS_FILE
    if damage == "pickle with its checksum":
        torch.save({"fc.weight": Payload(marker)}, obs)
    elif damage == "checksum":
        obs.write_bytes(obs.read_bytes() + b"\0")
    else:
        state = torch.load(obs, weights_only=True)
        key = next(iter(state))
        state[key] = torch.zeros(3, 3) if damage == "shape" else state[key] * float("nan")
        torch.save(state, obs)
    if damage != "checksum":  # an attacker who can write the cache can rewrite the JSON too
        meta["sha256"][digits_models.OBS_FILE] = hashlib.sha256(obs.read_bytes()).hexdigest()
        meta_path.write_text(json.dumps(meta))
    with pytest.warns(CacheWarning, match=f"{bundle}: unusable weights bundle"):
        models = digits_models.load_or_train(tiny, built, cache)
    assert models.origin == "trained" and not marker.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert digits_models.load_or_train(tiny, built, cache).origin == "cache"


# --------------------------------------------------------------------------- the MoG flow


def test_a_tampered_or_truncated_flow_cache_is_retrained(tmp_path):
    from cage.experiments.mog import _load_or_train
    from cage.generators.flow import MAFSpec

    spec = MAFSpec(features=2, transforms=1, hidden=(4,), steps=3, lr=1e-2)
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    path = tmp_path / "mog" / "maf-test.pt"
    _load_or_train(x, spec, 0, path)
    good = path.read_bytes()
    marker = tmp_path / "executed"
    for bad in (lambda: torch.save({"state": Payload(marker), "losses": []}, path),
                lambda: path.write_bytes(good[:100]),
                lambda: torch.save({"state": {}, "losses": [1.0]}, path)):
        bad()
        with pytest.warns(CacheWarning, match=f"{path}: unusable cached flow"):
            _, _, cached, _ = _load_or_train(x, spec, 0, path)
        assert not cached and not marker.exists()
        _, _, cached, _ = _load_or_train(x, spec, 0, path)
        assert cached


def test_the_cli_shows_a_cache_warning_as_one_line():
    @click.group(cls=CageGroup)
    def group():
        """A test group."""

    @group.command()
    def rebuild():
        """Warn like a cache loader, then finish."""
        warnings.warn(CacheWarning("cache/x.npz: unusable dataset cache (truncated); rebuilding "
                                   "it"), stacklevel=1)
        click.echo("done")

    res = CliRunner().invoke(group, ["rebuild"])
    assert res.exit_code == 0
    assert res.output == ("Warning: cache/x.npz: unusable dataset cache (truncated); rebuilding "
                          "it\ndone\n")
