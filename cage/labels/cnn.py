"""A small attribute CNN trained on a labelled image folder: ``psi`` when the user has none.

Architecture: three stride-2 convolutions (``width``, ``2 width``, ``4 width`` channels, ReLU),
global average pooling, one logit per attribute; images are resized to ``input_size`` (bilinear,
antialiased) first, exactly as decoded images are at classification time. Training: Adam, binary
cross-entropy summed over attributes, ``epochs`` passes over a seeded ``1 - test_fraction`` split;
the held-out split gives each attribute's accuracy (``classifiers.csv``, space ``observation``).
On the CPU training is deterministic (one thread, deterministic algorithms, seeded generators), so
the same folder and settings give the same weights; they are cached under the cache directory,
keyed by the attribute file's bytes, the image names and sizes, and every setting.

A cached model is checked before it is used: ``meta.json`` must be the object the training wrote,
``model.pt`` must match its checksum there and load as plain tensors of the exact architecture
with finite values, and the held-out accuracy is computed again on the held-out images (never
copied from ``meta.json``); when it differs from the one recorded at training by more than one
image, the cache is not used. Anything else is a :class:`cage_eval.errors.CacheWarning` and the
model is trained again.

It is trained on real images only; decoded images may look different (blur, artefacts), so check
its accuracy on your generator's outputs before trusting eq. 9 outcomes.

Section keys (``[observation_classifier] kind = "train"``)::

    images = "faces/"              # the labelled folder ...
    attributes = "attributes.csv"  # ... and its table (cage.labels.attributes_file)
    resize = false                 # resize files of another size than the generator's
    input_size = [64, 64]          # default: the generator's size, at most 64
    width = 16
    epochs = 10
    batch_size = 64
    lr = 0.002
    test_fraction = 0.2
    seed = 0
    max_images = 20000             # a seeded subset of the folder (default: all)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from cage.compute.runtime import deterministic_torch
from cage.config.sections import Section
from cage.generators.device import resolve_device
from cage.labels.attributes_file import read_attribute_table
from cage.labels.folder import ImageFolder, open_image_folder
from cage.labels.observation import ObservationClassifier
from cage_eval.cache import check_cache_path
from cage_eval.errors import CacheWarning, CageEvalError, ConfigError
from cage_eval.files import atomic_write_bytes

#: Bump when :class:`AttributeNet`, the training or the cache layout changes, so old cached
#: weights are not used.
VERSION = 2


@dataclass(frozen=True)
class CNNConfig:
    """Training settings of :class:`AttributeNet` (section keys in the module docstring)."""

    input_size: tuple[int, int] = (64, 64)
    width: int = 16
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    test_fraction: float = 0.2
    seed: int = 0


class AttributeNet(nn.Module):
    """Three stride-2 convolutions, global average pooling, one logit per attribute."""

    def __init__(self, channels: int, n_attributes: int, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, n_attributes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass
class CNNReport:
    """Held-out accuracy per attribute, split sizes, mean training loss per epoch."""

    accuracy: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_test: int = 0
    losses: list[float] = field(default_factory=list)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def load_training_images(folder: ImageFolder, rows: np.ndarray, size: tuple[int, int],
                         chunk: int = 256) -> torch.Tensor:
    """Images ``rows`` of ``folder`` as float32 ``(m, C, H', W')`` at ``size``, read in chunks."""
    parts = [_resize(folder.floats(rows[s:s + chunk]), size) for s in range(0, len(rows), chunk)]
    return torch.cat(parts)


def train_cnn(images: torch.Tensor, labels: dict[str, np.ndarray], config: CNNConfig, *,
              device: torch.device) -> tuple[AttributeNet, CNNReport]:
    """Fit :class:`AttributeNet` on ``images`` ``(n, C, H, W)`` and 0/1 ``labels`` ``{a: (n,)}``.

    Returns the model (eval mode, on the CPU) and its report.
    """
    names = list(labels)
    y_all = torch.as_tensor(np.stack([labels[a] for a in names], axis=1), dtype=torch.float32)
    n = images.shape[0]
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(n, generator=gen)
    n_test = max(1, int(round(n * config.test_fraction))) if n > 1 else 0
    test, train = order[:n_test], order[n_test:]
    report = CNNReport(n_train=len(train), n_test=len(test))
    cpu = device.type == "cpu"
    with deterministic_torch() if cpu else contextlib.nullcontext():
        torch.manual_seed(config.seed)
        model = AttributeNet(images.shape[1], len(names), config.width).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        model.train()
        for _ in range(config.epochs):
            perm = train[torch.randperm(len(train), generator=gen)]
            total = 0.0
            for s in range(0, len(perm), config.batch_size):
                idx = perm[s:s + config.batch_size]
                x, y = images[idx].to(device), y_all[idx].to(device)
                loss = F.binary_cross_entropy_with_logits(model(x), y, reduction="sum") / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            report.losses.append(round(total / max(len(perm), 1), 5))
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(images[test[s:s + 256]].to(device)).cpu()
                                for s in range(0, len(test), 256)]) if len(test) else None
    if logits is not None:
        report.accuracy = _accuracy(logits, y_all[test], names)
    return model.cpu().eval(), report


def _accuracy(logits: torch.Tensor, y: torch.Tensor, names: list[str]) -> dict[str, float]:
    pred = (logits > 0).to(torch.float32)
    return {a: float((pred[:, j] == y[:, j]).float().mean()) for j, a in enumerate(names)}


def held_out_rows(n: int, config: CNNConfig) -> np.ndarray:
    """Positions (into the training images) of the held-out split :func:`train_cnn` draws."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed))
    n_test = max(1, int(round(n * config.test_fraction))) if n > 1 else 0
    return order[:n_test].numpy()


def held_out_accuracy(model: AttributeNet, images: torch.Tensor, labels: dict[str, np.ndarray],
                      ) -> dict[str, float]:
    """``model``'s accuracy per attribute on ``images`` (held out) and their 0/1 ``labels``."""
    names = list(labels)
    if len(images) == 0:
        return {}
    y = torch.as_tensor(np.stack([labels[a] for a in names], axis=1), dtype=torch.float32)
    with torch.no_grad():
        logits = torch.cat([model(images[s:s + 256]) for s in range(0, len(images), 256)])
    return _accuracy(logits, y, names)


def _cache_key(table_bytes: bytes, folder: ImageFolder, config: CNNConfig, rows: np.ndarray,
               names: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": VERSION, "config": asdict(config), "attributes": names,
                         "channels": folder.channels, "size": list(folder.size),
                         "rows": rows.tolist()}, sort_keys=True).encode())
    h.update(table_bytes)
    for name in folder.names:
        h.update(name.encode())
        h.update(str((folder.directory / name).stat().st_size).encode())
    return h.hexdigest()[:16]


class _Unusable(Exception):
    """A cache entry that exists but cannot be used (the message says why)."""


def _read_cache(directory: Path, channels: int, names: list[str], config: CNNConfig,
                held_out: tuple[torch.Tensor, dict[str, np.ndarray]]
                ) -> tuple[AttributeNet, CNNReport] | None:
    """The cached model and its report (accuracy computed again on ``held_out``), or None when
    there is none, or (after a :class:`CacheWarning`) when it cannot be trusted."""
    if not (directory / "meta.json").exists() and not (directory / "model.pt").exists():
        return None
    try:
        check_cache_path(directory)
        return _checked_cache(directory, channels, names, config, held_out)
    except CageEvalError:
        raise  # a cache another user could write: refused
    except _Unusable as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - untrusted input: never a traceback, never used
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
    warnings.warn(CacheWarning(f"{directory}: unusable cached classifier ({reason}); training "
                               "it again"), stacklevel=3)
    return None


def _checked_cache(directory: Path, channels: int, names: list[str], config: CNNConfig,
                   held_out: tuple[torch.Tensor, dict[str, np.ndarray]]
                   ) -> tuple[AttributeNet, CNNReport]:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        blob = (directory / "model.pt").read_bytes()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Unusable(f"unreadable ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("report"), dict):
        raise _Unusable("meta.json is not the object the training writes")
    if meta.get("attributes") != names:
        raise _Unusable("meta.json lists other attributes")
    if meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        raise _Unusable("model.pt does not match its checksum in meta.json")
    try:
        state = torch.load(io.BytesIO(blob), weights_only=True)
        model = AttributeNet(channels, len(names), config.width)
        model.load_state_dict(state)
    except Exception as exc:  # UnpicklingError, RuntimeError (shapes, zip), ...
        raise _Unusable(f"model.pt does not load as weights ({type(exc).__name__})") from None
    if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()):
        raise _Unusable("model.pt holds non-finite weights")
    model.eval()
    images, labels = held_out
    accuracy = held_out_accuracy(model, images, labels)
    recorded = meta["report"].get("accuracy")
    tolerance = 1.5 / max(len(images), 1)  # one held-out image (another device may round so)
    if not isinstance(recorded, dict) or set(recorded) != set(accuracy) or any(
            not isinstance(recorded[a], (int, float))
            or abs(float(recorded[a]) - accuracy[a]) > tolerance for a in accuracy):
        raise _Unusable(f"held-out accuracy computed again {_fmt(accuracy)} differs from the "
                        f"recorded {recorded if not isinstance(recorded, dict) else _fmt(recorded)}")
    losses = meta["report"].get("losses", [])
    report = CNNReport(accuracy=accuracy, n_train=int(meta["report"].get("n_train", 0)),
                       n_test=len(images),
                       losses=[float(v) for v in losses] if isinstance(losses, list) else [])
    return model, report


def _fmt(accuracy: dict[str, float]) -> str:
    return "{" + ", ".join(f"{a}: {float(v):.3f}" if isinstance(v, (int, float)) else f"{a}: ?"
                           for a, v in accuracy.items()) + "}"


def from_section(section: Section, *, generator_device: str, channels: int,
                 size: tuple[int, int], cache_dir: Path) -> tuple[ObservationClassifier, dict]:
    """Train (or load from the cache) the CNN a ``kind = "train"`` section describes.

    Returns the classifier and a dict for the manifest (accuracy, split sizes, cache state).
    """
    section.text("kind")
    images_dir = section.path("images", kind="dir", what="give the folder of labelled images")
    table_path = section.path("attributes", what="give the attributes CSV or list_attr_celeba.txt "
                              "of that folder")
    resize = section.flag("resize", False)
    default_size = (min(size[0], 64), min(size[1], 64))
    input_size = section.numbers("input_size", default_size, length=2, integers=True)
    config = CNNConfig(
        input_size=(input_size[0], input_size[1]),
        width=section.integer("width", 16, minimum=1),
        epochs=section.integer("epochs", 10, minimum=1),
        batch_size=section.integer("batch_size", 64, minimum=1),
        lr=section.number("lr", 2e-3, minimum=0.0, exclusive_minimum=True),
        test_fraction=section.number("test_fraction", 0.2, minimum=0.0, maximum=0.9,
                                     exclusive_minimum=True),
        seed=section.integer("seed", 0, minimum=0))
    if min(config.input_size) < 8:
        raise ConfigError(f"{section.where('input_size')}: must be at least [8, 8]")
    max_images = section.integer("max_images", None, minimum=2)
    device = resolve_device(section.text("device", generator_device), section.where("device"))
    section.finish()
    table = read_attribute_table(table_path, names=True)
    assert table.names is not None
    folder = open_image_folder(images_dir, table.names, table=table_path, channels=channels,
                               size=size, resize=resize,
                               resize_key=f"{section.where('resize')}")
    rows = np.arange(len(table))
    if max_images is not None and max_images < len(rows):
        rng = np.random.default_rng(config.seed)
        rows = np.sort(rng.choice(len(rows), size=max_images, replace=False))
    names = list(table.attributes)
    single = [a for a in names if table.attributes[a][rows].min() == table.attributes[a][rows].max()]
    if len(single) == len(names):
        raise ConfigError(f"{table_path}: every attribute has a single value; the classifier "
                          "needs both 0 and 1 labels")
    key = _cache_key(table_path.read_bytes(), folder, config, rows, names)
    cache = Path(cache_dir) / f"obs-cnn-{key}"
    test = rows[held_out_rows(len(rows), config)]
    held_out = (load_training_images(folder, test, config.input_size),
                {a: table.attributes[a][test] for a in names})
    found = _read_cache(cache, channels, names, config, held_out)
    origin = "cache"
    if found is None:
        x = load_training_images(folder, rows, config.input_size)
        model, report = train_cnn(x, {a: table.attributes[a][rows] for a in names}, config,
                                  device=device)
        origin = "trained"
        buf = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, buf)
        try:
            cache.mkdir(mode=0o755, parents=True, exist_ok=True)
            atomic_write_bytes(cache / "model.pt", buf.getvalue())
            meta = {"attributes": names, "report": asdict(report), "config": asdict(config),
                    "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
            atomic_write_bytes(cache / "meta.json", json.dumps(meta, indent=1).encode())
        except OSError:
            origin = "trained (cache not writable)"
    else:
        model, report = found
    psi = ObservationClassifier(model, columns=names, outputs="logit",
                                input_size=config.input_size, channels=channels, device=device,
                                batch_size=256, where=section.where())
    info = {"kind": "train", "origin": origin, "key": key, "images": len(rows),
            "accuracy": report.accuracy, "n_train": report.n_train, "n_test": report.n_test,
            "losses": report.losses, "single_valued": single, "config": asdict(config)}
    return psi, info
