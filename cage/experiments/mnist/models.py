"""The trained models of the ``morphomnist`` experiment: the Glow flow and the CNN ``psi``.

Each model is one *component*: a weights file and a JSON meta file, named by a key that hashes
everything that determines the weights::

    morphomnist_flow_<key>.pt / .json   key: dataset image fields + GlowConfig + versions
    morphomnist_obs_<key>.pt  / .json   key: dataset fields incl. label quantiles + ObsClassifierConfig

The flow's key leaves out the label thresholds (they relabel the same images), so the label-balance
control reuses the shipped flow and only retrains the cheap CNN. :func:`load_or_train` looks in the
package's ``cage/experiments/mnist/weights/`` first, then in ``<cache>/morphomnist-weights/``, and trains (and
caches) otherwise; weights load through ``torch.load(..., weights_only=True)`` after their SHA-256
is checked against the meta file.
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

import torch

from cage.experiments.digits.obs_classifier import (
    AttributeCNN,
    ObsClassifierConfig,
    ObservationClassifier,
    agrees,
    held_out_accuracy,
    split_indices,
    train_obs_classifier,
)
from cage.experiments.mnist import data as mnist
from cage.generators.flow_image import (
    GlowConfig,
    GlowGenerator,
    glow_from_bytes,
    state_to_bytes,
    train_glow,
)
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, InputFileError, RunDirError
from cage_eval.files import atomic_write_bytes, content_key, writable_directory

#: Bump when the flow or CNN architecture changes, so old files are not loaded.
ARCHITECTURE_VERSION = 1
CACHE_SUBDIR = "morphomnist-weights"


@dataclass(frozen=True)
class MorphoModelConfigs:
    """Everything that determines the trained weights."""

    data: mnist.MorphoMNISTConfig
    flow: GlowConfig
    obs: ObsClassifierConfig

    def flow_key(self) -> str:
        return _hash({"data": self.data.image_fields(), "flow": self.flow.to_dict(),
                      "architecture_version": ARCHITECTURE_VERSION})

    def obs_key(self) -> str:
        return _hash({"data": self.data.fields(), "obs": asdict(self.obs),
                      "attributes": list(mnist.ATTRIBUTES),
                      "dataset_version": mnist.DATASET_VERSION,
                      "architecture_version": ARCHITECTURE_VERSION})

    def file_stem(self, component: str) -> str:
        """``morphomnist_flow_<key>`` or ``morphomnist_obs_<key>``."""
        key = self.flow_key() if component == "flow" else self.obs_key()
        return f"morphomnist_{component}_{key}"


def _hash(obj: Any) -> str:
    return content_key(obj)


@dataclass
class MorphoModels:
    """The loaded flow and CNN with their meta files and where each came from."""

    generator: GlowGenerator
    psi: ObservationClassifier
    flow_meta: dict[str, Any]
    obs_meta: dict[str, Any]
    origin: dict[str, str]  # component -> "shipped" / "cache" / "trained"


def shipped_dir() -> Path:
    """The package's ``cage/experiments/mnist/weights`` directory."""
    return Path(str(resources.files("cage.experiments.mnist") / "weights"))


def cache_dir_for(cache_dir: str | os.PathLike[str]) -> Path:
    return Path(cache_dir) / CACHE_SUBDIR


def _read_cached(directory: Path, stem: str) -> tuple[bytes, dict[str, Any]] | None:
    """Component ``stem`` of the cache, or None (after a :class:`CacheWarning`) when it cannot
    be trusted: unreadable, not matching its checksum, or not loading as weights."""
    check_cache_path(directory)
    try:
        found = _read(directory, stem)
        if found is not None:
            _loads(found[0], stem)
        return found
    except Exception as exc:  # noqa: BLE001 - untrusted input: never a traceback, never used
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        warnings.warn(CacheWarning(f"{directory / stem}: unusable cached weights ({reason}); "
                                   "training them again"), stacklevel=3)
        return None


def _loads(blob: bytes, stem: str) -> None:
    """Raise unless ``blob`` loads as plain, finite tensors."""
    state = torch.load(io.BytesIO(blob), weights_only=True)
    if not isinstance(state, dict) or not all(
            isinstance(t, torch.Tensor) and bool(torch.isfinite(t).all()) for t in state.values()):
        raise ValueError(f"{stem}.pt does not hold finite weights")


def _read(directory: Path, stem: str) -> tuple[bytes, dict[str, Any]] | None:
    """The weights and meta of component ``stem`` in ``directory``, checksum verified."""
    meta_path = directory / f"{stem}.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        data = (directory / f"{stem}.pt").read_bytes()
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{meta_path}: unreadable weights ({exc}); delete them or run "
                             "`cage-eval train -e morphomnist` again") from None
    if not isinstance(meta, dict) or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        raise InputFileError(f"{directory / (stem + '.pt')}: checksum differs from {meta_path.name}; "
                             "run `cage-eval train -e morphomnist` again")
    return data, meta


def _find(stem: str, cache_dir: str | os.PathLike[str] | None
          ) -> tuple[bytes, dict[str, Any], str] | None:
    for origin, directory in (("shipped", shipped_dir()),
                              ("cache", cache_dir_for(cache_dir) if cache_dir else None)):
        if directory is None:
            continue
        found = _read(directory, stem) if origin == "shipped" else _read_cached(directory, stem)
        if found is not None:
            return found[0], found[1], origin
    return None


def train_flow(configs: MorphoModelConfigs, data: mnist.MorphoMNISTDataset,
               progress: Any = None) -> tuple[bytes, dict[str, Any]]:
    """Train the flow; returns its weights file and meta (not yet written)."""
    flow, report = train_glow(data.images, configs.flow, progress=progress)
    blob = state_to_bytes(flow)
    meta = {"component": "flow", "key": configs.flow_key(), "data": configs.data.image_fields(),
            "flow": configs.flow.to_dict(), "report": report.to_dict(),
            "params": int(sum(p.numel() for p in flow.parameters())),
            "sha256": hashlib.sha256(blob).hexdigest(), "torch": torch.__version__}
    return blob, meta


def train_obs(configs: MorphoModelConfigs, data: mnist.MorphoMNISTDataset
              ) -> tuple[bytes, dict[str, Any]]:
    """Train the CNN ``psi`` on the real images; returns its weights file and meta.

    The flow's reconstructions are the images themselves (it is invertible), so there is no
    separate reconstruction set as for the VAE: the real images are passed for both.
    """
    x = data.float_images()
    labels = {a: data.attributes[a] for a in mnist.ATTRIBUTES}
    psi, report = train_obs_classifier(x, x, labels, configs.obs)
    blob = state_to_bytes(psi.model)
    meta = {"component": "obs", "key": configs.obs_key(), "data": configs.data.fields(),
            "obs": asdict(configs.obs), "attributes": list(mnist.ATTRIBUTES),
            "report": {"accuracy": report.accuracy_real, "steps": report.steps},
            "sha256": hashlib.sha256(blob).hexdigest(), "torch": torch.__version__}
    return blob, meta


def write_component(directory: str | os.PathLike[str], stem: str, blob: bytes,
                    meta: dict[str, Any]) -> Path:
    """Write ``stem.pt`` and ``stem.json`` (atomically, each) into ``directory``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(directory / f"{stem}.pt", blob)
        atomic_write_bytes(directory / f"{stem}.json",
                           (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        for suffix in (".pt", ".json"):
            os.chmod(directory / f"{stem}{suffix}", 0o644)
    except OSError as exc:
        raise RunDirError(f"{directory}: cannot write the weights ({exc.strerror}); choose a "
                          "writable directory") from None
    return directory


def _make_flow(blob: bytes, configs: MorphoModelConfigs, temperature: float) -> GlowGenerator:
    return GlowGenerator(glow_from_bytes(blob, configs.flow), temperature=temperature)


def _make_psi(blob: bytes) -> ObservationClassifier:
    model = AttributeCNN(len(mnist.ATTRIBUTES))
    model.load_state_dict(torch.load(io.BytesIO(blob), weights_only=True))
    return ObservationClassifier(model, mnist.ATTRIBUTES)


def load_or_train(configs: MorphoModelConfigs, data: mnist.MorphoMNISTDataset,
                  cache_dir: str | os.PathLike[str] | None, *,
                  temperature: float = 1.0) -> MorphoModels:
    """Shipped components if their keys match, else cached ones, else train and cache."""
    parts: dict[str, tuple[bytes, dict[str, Any], str]] = {}
    for component, trainer in (("flow", train_flow), ("obs", train_obs)):
        stem = configs.file_stem(component)
        found = _find(stem, cache_dir)
        if found is not None and component == "obs" and found[2] != "trained" \
                and not _recompute_accuracy(found, configs, data, stem):
            found = None
        if found is None:
            blob, meta = trainer(configs, data)
            if cache_dir is not None:
                write_component(cache_dir_for(cache_dir), stem, blob, meta)
            found = (blob, meta, "trained")
        parts[component] = found
    return MorphoModels(
        generator=_make_flow(parts["flow"][0], configs, temperature),
        psi=_make_psi(parts["obs"][0]),
        flow_meta=parts["flow"][1], obs_meta=parts["obs"][1],
        origin={c: p[2] for c, p in parts.items()})


def _recompute_accuracy(found: tuple[bytes, dict[str, Any], str], configs: MorphoModelConfigs,
                        data: mnist.MorphoMNISTDataset, stem: str) -> bool:
    """Compute the CNN's held-out accuracy on the real images again and put it in the meta in
    place of the recorded figure (which never lands in a result). False (after a
    :class:`CacheWarning`) for a cached CNN whose recorded figure differs by more than one
    held-out image: it is trained again."""
    blob, meta, origin = found
    labels = {a: data.attributes[a] for a in mnist.ATTRIBUTES}
    x = data.float_images()
    computed = held_out_accuracy(_make_psi(blob), x, labels, configs.obs)
    _, test = split_indices(len(x), configs.obs.test_fraction, configs.obs.seed)
    report = meta.get("report") if isinstance(meta.get("report"), dict) else {}
    same = agrees(report.get("accuracy"), computed, len(test))
    meta["report"] = {**report, "accuracy": computed}
    if not same:
        warnings.warn(CacheWarning(
            f"{stem}: the CNN's held-out accuracy computed again ({computed}) differs from the "
            f"one recorded in {stem}.json; " + ("the computed one is used" if origin == "shipped"
                                                else "training it again")), stacklevel=3)
    return same or origin == "shipped"


def shipped_meta(stem: str) -> dict[str, Any] | None:
    """A shipped component's meta, or None."""
    path = shipped_dir() / f"{stem}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def train_and_write(configs: MorphoModelConfigs, cache_dir: str | os.PathLike[str] | None,
                    out: str | os.PathLike[str], progress: Any = None
                    ) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Train both components from scratch (dataset from the cache when present) into ``out``.

    Returns ``{component: (path of the weights file, meta)}``.
    """
    out = writable_directory(out, "the weights")
    data = mnist.load(configs.data, cache_dir)
    written = {}
    for component in ("flow", "obs"):
        if component == "flow":
            blob, meta = train_flow(configs, data, progress=progress)
        else:
            blob, meta = train_obs(configs, data)
        stem = configs.file_stem(component)
        write_component(out, stem, blob, meta)
        written[component] = (out / f"{stem}.pt", meta)
    return written
