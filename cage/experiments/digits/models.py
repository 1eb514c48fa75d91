"""The trained models of the digits experiment (VAE + observation classifier) as one weights bundle.

A bundle is a directory with ``digits_vae.pt``, ``digits_obs.pt`` and ``digits_weights.json`` (the
configs that made them, their training reports and a key). The key is a hash of the dataset config,
the VAE config and the classifier config: a bundle is used only for exactly the config it was trained
with. :func:`load_or_train` looks in the package's shipped ``cage/experiments/digits/weights/`` first, then in the cache
directory, and trains (and caches) otherwise; :func:`train_bundle` always trains from scratch (the
``cage-eval train`` command).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cage.compute.runtime import deterministic_torch
from cage.experiments.digits import data as digits_data
from cage.experiments.digits.obs_classifier import (
    AttributeCNN,
    ObsClassifierConfig,
    ObservationClassifier,
    agrees,
    held_out_accuracy,
    split_indices,
    train_obs_classifier,
)
from cage.generators.vae import VAEConfig, VAEGenerator, state_to_bytes, train_vae, vae_from_bytes
from cage_eval import progress
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, RunDirError
from cage_eval.files import atomic_write_bytes, content_key, writable_directory

VAE_FILE = "digits_vae.pt"
OBS_FILE = "digits_obs.pt"
META_FILE = "digits_weights.json"
BUNDLE_FILES = (VAE_FILE, OBS_FILE, META_FILE)
#: Bump when ConvVAE or AttributeCNN change shape, so old bundles are not loaded.
ARCHITECTURE_VERSION = 2


@dataclass(frozen=True)
class ModelConfigs:
    """Everything that determines the trained weights."""

    data: digits_data.DigitsConfig
    vae: VAEConfig
    obs: ObsClassifierConfig

    def to_dict(self) -> dict[str, Any]:
        return {"data": asdict(self.data), "vae": self.vae.to_dict(), "obs": asdict(self.obs),
                "attributes": list(digits_data.ATTRIBUTES),
                "dataset_version": digits_data.DATASET_VERSION,
                "architecture_version": ARCHITECTURE_VERSION}

    def key(self) -> str:
        return content_key(self.to_dict())


@dataclass
class DigitsModels:
    """A loaded bundle: the generator, the observation classifier and the bundle's metadata."""

    generator: VAEGenerator
    psi: ObservationClassifier
    meta: dict[str, Any]
    origin: str  # "shipped", "cache" or "trained"


def shipped_dir() -> Path:
    """The package's ``cage/experiments/digits/weights`` directory."""
    return Path(str(resources.files("cage.experiments.digits") / "weights"))


def cache_bundle_dir(cache_dir: str | os.PathLike[str], configs: ModelConfigs) -> Path:
    return Path(cache_dir) / f"digits-weights-{configs.key()}"


class _Unusable(Exception):
    """A bundle that exists but cannot be used (the message says why)."""


def _read_meta(directory: Path) -> dict[str, Any]:
    try:
        meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unusable(f"{META_FILE} unreadable ({type(exc).__name__})") from None
    if not isinstance(meta, dict):
        raise _Unusable(f"{META_FILE} is not a JSON object")
    return meta


def _checked_bytes(directory: Path, meta: dict[str, Any]) -> dict[str, bytes]:
    """The two weight files, each matching its checksum in the bundle's JSON."""
    out = {}
    for name in (VAE_FILE, OBS_FILE):
        try:
            data = (directory / name).read_bytes()
        except OSError as exc:
            raise _Unusable(f"{name} unreadable ({exc.strerror})") from None
        want = meta.get("sha256", {}).get(name) if isinstance(meta.get("sha256"), dict) else None
        if hashlib.sha256(data).hexdigest() != want:
            raise _Unusable(f"{name} does not match its checksum in {META_FILE}")
        out[name] = data
    return out


def _finite(model: torch.nn.Module, name: str) -> torch.nn.Module:
    if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()):
        raise _Unusable(f"{name} holds non-finite weights")
    return model


def _models(data: dict[str, bytes], meta: dict[str, Any], configs: ModelConfigs) -> DigitsModels:
    """Build the models from checked bytes: weights only (no code), the exact architecture."""
    if meta.get("attributes") != list(digits_data.ATTRIBUTES):
        raise _Unusable(f"{META_FILE} lists other attributes")
    try:
        vae = vae_from_bytes(data[VAE_FILE], configs.vae)
        model = AttributeCNN(len(digits_data.ATTRIBUTES))
        model.load_state_dict(torch.load(io.BytesIO(data[OBS_FILE]), weights_only=True))
    except Exception as exc:  # UnpicklingError, RuntimeError (shapes, zip), ...: untrusted input
        raise _Unusable(f"weights do not load ({type(exc).__name__})") from None
    return DigitsModels(generator=VAEGenerator(_finite(vae, VAE_FILE)),
                        psi=ObservationClassifier(_finite(model, OBS_FILE),
                                                  list(digits_data.ATTRIBUTES)),
                        meta=meta, origin="")


def _read_bundle(directory: Path, configs: ModelConfigs) -> DigitsModels | None:
    """The bundle in ``directory`` if it was trained for ``configs`` and passes every check;
    None when there is none for these configs, or (after a :class:`CacheWarning`) when it is
    damaged or tampered with."""
    if not (directory / META_FILE).is_file():
        return None
    try:
        meta = _read_meta(directory)
        if meta.get("key") != configs.key():
            return None
        return _models(_checked_bytes(directory, meta), meta, configs)
    except _Unusable as exc:
        warnings.warn(CacheWarning(f"{directory}: unusable weights bundle ({exc}); not loaded, "
                                   "the models are trained again"), stacklevel=3)
        return None


def _recompute_accuracy(models: DigitsModels, configs: ModelConfigs,
                        data: digits_data.DigitsDataset, directory: Path) -> bool:
    """Compute the observation classifier's held-out accuracy (real images and VAE
    reconstructions) again and put it in ``models.meta`` in place of the recorded figures, which
    are never what lands in a result. False (after a :class:`CacheWarning`) when the recorded
    figures differ by more than one held-out image: the bundle is not what its file says."""
    x = data.float_images()
    _, test = split_indices(len(x), configs.obs.test_fraction, configs.obs.seed)
    recon = np.zeros_like(x)
    with deterministic_torch():
        made = models.generator.decode(models.generator.encode(torch.as_tensor(x[test]))).numpy()
    recon[test] = np.round(made * 255.0) / 255.0
    labels = {a: data.attributes[a] for a in digits_data.ATTRIBUTES}
    computed = {"accuracy_real": held_out_accuracy(models.psi, x, labels, configs.obs),
                "accuracy_recon": held_out_accuracy(models.psi, recon, labels, configs.obs)}
    obs = models.meta.get("obs") if isinstance(models.meta.get("obs"), dict) else {}
    same = all(agrees(obs.get(k), v, len(test)) for k, v in computed.items())
    models.meta["obs"] = {**obs, **computed}
    if not same:
        warnings.warn(CacheWarning(
            f"{directory}: the observation classifier's held-out accuracy computed again "
            f"({computed['accuracy_recon']}) differs from the one recorded in {META_FILE}; "
            + ("the computed one is used" if models.origin == "shipped"
               else "not loaded, the models are trained again")), stacklevel=3)
    return same


def train_bundle(configs: ModelConfigs, data: digits_data.DigitsDataset) -> tuple[
        DigitsModels, dict[str, bytes]]:
    """Train the VAE, then the observation classifier on real images and VAE reconstructions.

    Returns the models and the bundle's files (name -> bytes), not yet written.
    """
    x = data.float_images()
    vae, vae_report = train_vae(x, configs.vae)
    generator = VAEGenerator(vae)
    with deterministic_torch():
        recon = generator.decode(generator.encode(torch.as_tensor(x))).numpy()
    recon = np.round(recon * 255.0) / 255.0
    labels = {a: data.attributes[a] for a in digits_data.ATTRIBUTES}
    psi, obs_report = train_obs_classifier(x, recon.astype(np.float32), labels, configs.obs)
    vae_bytes = state_to_bytes(vae)
    obs_bytes = state_to_bytes(psi.model)
    meta = {
        "key": configs.key(),
        "configs": configs.to_dict(),
        "dataset_images": len(data),
        "attributes": list(digits_data.ATTRIBUTES),
        "vae": {"losses": [round(v, 4) for v in vae_report.losses],
                "recon_mse": round(vae_report.recon_mse, 6), "steps": vae_report.steps},
        "obs": obs_report.to_dict(),
        "sha256": {VAE_FILE: hashlib.sha256(vae_bytes).hexdigest(),
                   OBS_FILE: hashlib.sha256(obs_bytes).hexdigest()},
        "torch": torch.__version__,
    }
    meta_bytes = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    models = DigitsModels(generator=generator, psi=psi, meta=meta, origin="trained")
    return models, {VAE_FILE: vae_bytes, OBS_FILE: obs_bytes, META_FILE: meta_bytes}


def write_bundle(directory: str | os.PathLike[str], files: dict[str, bytes]) -> Path:
    """Write a bundle's files (atomically, each) into ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name in (VAE_FILE, OBS_FILE, META_FILE):
            atomic_write_bytes(directory / name, files[name])
            os.chmod(directory / name, 0o644)
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot write the weights ({exc.strerror}); choose a "
                          "writable directory") from None
    return directory


def load_or_train(configs: ModelConfigs, data: digits_data.DigitsDataset,
                  cache_dir: str | os.PathLike[str] | None) -> DigitsModels:
    """Shipped weights if they match ``configs``, else cached ones, else train and cache."""
    found = _read_bundle(shipped_dir(), configs)
    if found is not None:
        found.origin = "shipped"
        _recompute_accuracy(found, configs, data, shipped_dir())
        progress.note("digits models (VAE, observation classifier): the shipped weights")
        return found
    if cache_dir is not None:
        check_cache_path(cache_bundle_dir(cache_dir, configs))
        found = _read_bundle(cache_bundle_dir(cache_dir, configs), configs)
        if found is not None and _recompute_accuracy(found, configs, data,
                                                     cache_bundle_dir(cache_dir, configs)):
            found.origin = "cache"
            progress.note(f"digits models: cached in {cache_bundle_dir(cache_dir, configs)}")
            return found
    progress.note("digits models: no shipped or cached weights for this configuration; training")
    models, files = train_bundle(configs, data)
    if cache_dir is not None:
        write_bundle(cache_bundle_dir(cache_dir, configs), files)
    return models


def read_shipped_meta() -> dict[str, Any] | None:
    """The shipped bundle's ``digits_weights.json``, or None when none is shipped."""
    path = shipped_dir() / META_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def train_and_write(configs: ModelConfigs, cache_dir: str | os.PathLike[str] | None,
                    out: str | os.PathLike[str]) -> tuple[DigitsModels, Path]:
    """Train a bundle from scratch (dataset from the cache when present) and write it to ``out``."""
    out = writable_directory(out, "the weights")
    data = digits_data.load(configs.data, cache_dir)
    models, files = train_bundle(configs, data)
    return models, write_bundle(out, files)
